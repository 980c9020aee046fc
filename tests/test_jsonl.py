import pytest

from llmdistill.errors import UserError
from llmdistill.jsonl import RowAppender, read_rows, recover_rows, write_rows
from llmdistill.records import Problem, Trace


def test_roundtrip(tmp_path):
    rows = [Problem(id=str(i), question=f"q{i}", answer=str(i)) for i in range(3)]
    assert write_rows(tmp_path / "p.jsonl", rows) == 3
    assert read_rows(tmp_path / "p.jsonl", Problem) == rows
    assert not (tmp_path / "p.jsonl.tmp").exists()


def test_malformed_line_reports_line_number(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"id": "1", "question": "q"}\n{"id": "2", "question": \n')
    with pytest.raises(UserError, match=r"p.jsonl:2: malformed JSON"):
        read_rows(p, Problem)


def test_invalid_row_names_field_and_line(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"id": "1", "question": "q"}\n\n{"id": "3"}\n')
    with pytest.raises(UserError, match=r"p.jsonl:3: invalid Problem row: question: Field required"):
        read_rows(p, Problem)


def test_recover_discards_torn_last_line(tmp_path):
    p = tmp_path / "t.jsonl"
    rows = [Trace(id=str(i), question="q", prompt="p", completion="c") for i in range(3)]
    with RowAppender(p) as w:
        w.write(rows)
    data = p.read_bytes()
    p.write_bytes(data + data.splitlines(keepends=True)[0][:25])  # a write cut off mid-line
    assert recover_rows(p, Trace) == rows
    assert p.read_bytes() == data  # the torn tail is gone, so appends start on a clean line


def test_a_complete_last_line_that_fails_validation_is_refused_and_never_cut(tmp_path):
    """A newline-terminated last line that does not validate (a row schema change, an edit) is a
    refusal naming file:line and the field; the file keeps every byte."""
    p = tmp_path / "t.jsonl"
    good = Trace(id="1", question="q", prompt="p", completion="c").model_dump_json()
    p.write_text(f'{good}\n{good[:-1]}, "new_field": 1}}\n')
    before = p.read_bytes()
    with pytest.raises(UserError, match=r"t.jsonl:2: invalid Trace row: new_field: Extra inputs are not permitted.*left as it is") as e:
        recover_rows(p, Trace)
    assert "delete" not in str(e.value) and p.read_bytes() == before
    newer = Trace(id="2", question="q", prompt="p", completion="c").model_dump_json().replace('"schema_version":1', '"schema_version":99')
    p.write_text(f"{good}\n{newer}\n")
    with pytest.raises(UserError, match=r"t.jsonl:2: .*schema_version: .*newer llmdistill"):
        recover_rows(p, Trace)


def test_recover_rejects_corruption_before_the_end(tmp_path):
    p = tmp_path / "t.jsonl"
    good = Trace(id="1", question="q", prompt="p", completion="c").model_dump_json()
    p.write_text(f"{good}\nnot json\n{good}\n")
    with pytest.raises(UserError, match="t.jsonl:2"):
        recover_rows(p, Trace)


def test_extend_row_builds_the_same_row_as_validation():
    from llmdistill.records import FilteredTrace, extend_row

    t = Trace(id="1", question="q", answer="2", prompt="p", completion="c", sample=3)
    extra = dict(
        rationale="r",
        pred="2",
        answer_key="2",
        verdict="correct",
        majority=None,
        agreement=None,
        rejected_by=None,
        reason="ok",
        thinking=None,
        cut=None,
        truncated=False,
    )
    fast = extend_row(FilteredTrace, t, **extra)
    slow = FilteredTrace.model_validate({**t.model_dump(), **extra})
    assert fast == slow and fast.model_dump() == slow.model_dump() and fast.model_dump_json() == slow.model_dump_json()
    assert set(FilteredTrace.model_fields) == set(fast.__dict__)
    fast.reason = "changed"  # still a normal mutable row
    assert fast.reason == "changed"
