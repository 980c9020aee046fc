"""Each filter on hand-made rows: what it drops and the reason it gives."""

import pytest

from llmdistill.config import FILTERS, Config
from llmdistill.records import FilteredTrace
from llmdistill.stages.filter.rules import FILTER_FUNCTIONS
from llmdistill.stages.filter.run import run_filters, teacher_accuracy
from tests.conftest import write_jsonl


def cfg(tmp_path, **filter_cfg) -> Config:
    write_jsonl(
        tmp_path / "data" / "test.jsonl",
        [{"id": "t0", "question": "A farmer has 17 sheep and all but 9 run away. How many are left?", "answer": "9"}],
    )
    return Config.model_validate(
        {
            "output_dir": str(tmp_path / "run"),
            "data": {"path": str(tmp_path / "data")},
            "teacher": {"model_name_or_path": "m"},
            "filter": {"order": FILTERS, **filter_cfg},
        }
    )


def row(
    id="p",
    sample=0,
    rationale="Add 3 and 4 to get 7.",
    key="7",
    verdict="correct",
    question="Sam has 3 apples and gets 4 more. How many?",
    **kw,
):
    return FilteredTrace(
        id=id,
        sample=sample,
        question=question,
        answer="7",
        prompt="",
        completion="",
        rationale=rationale,
        pred=key,
        answer_key=key,
        verdict=verdict,
        **kw,
    )


def reasons(name, rows, c):
    return FILTER_FUNCTIONS[name](rows, c)


def test_vote_majority_and_agreement(tmp_path):
    c = cfg(tmp_path, vote={"min_agreement": 0.5})
    rows = [
        row(sample=0),
        row(sample=1),
        row(sample=2, key="8", verdict="wrong"),
        row(id="u", sample=0, key="5", verdict="unlabeled"),
        row(id="u", sample=1, key="5", verdict="unlabeled"),
        row(id="u", sample=2, key="6", verdict="unlabeled"),
        row(id="h", sample=0, key="1", verdict="wrong"),
        row(id="h", sample=1, key="2", verdict="wrong"),
        row(id="h", sample=2, key="7"),
    ]
    out = reasons("vote", rows, c)
    assert out[:2] == [None, None] and "disagrees with gold" in out[2]
    assert rows[0].majority == "7" and rows[0].agreement == pytest.approx(0.6667)
    assert out[3:5] == [None, None] and "disagrees with the majority '5'" in out[5]
    assert all("agreement 0.3333 < 0.5" in r for r in out[6:])


def test_length_and_degenerate(tmp_path):
    c = cfg(tmp_path, length={"min_words": 3, "max_words": 10})
    rows = [row(rationale="Too short."), row(), row(rationale=" ".join(["word"] * 11))]
    assert [r is None for r in reasons("length", rows, c)] == [False, True, False]
    loop = "so 3 + 4 = 7 and " * 6
    lines = "Step one.\nStep one.\nStep one.\nDone."
    out = reasons("degenerate", [row(), row(rationale=loop), row(rationale=lines)], c)
    assert out[0] is None and "4-grams repeat" in out[1] and "line repeated 3 times" in out[2]


def test_exact_dedup_ignores_case_spacing_and_punctuation(tmp_path):
    rows = [row(sample=0), row(sample=1, rationale="add 3 and 4   to get 7"), row(sample=2, rationale="Add 4 and 3 to get 7.")]
    assert reasons("dedup_exact", rows, cfg(tmp_path)) == [None, "exact duplicate of p sample 0", None]


def test_near_dedup(tmp_path):
    long = "First we count the apples in the basket which gives twelve then we add the five apples from the tree and get seventeen apples in total"
    rows = [
        row(sample=0, rationale=long),
        row(sample=1, rationale=long.replace("seventeen apples in total", "seventeen apples in all")),
        row(
            sample=2,
            rationale="Completely different reasoning about oranges and pears that shares almost nothing with the other text at all",
        ),
    ]
    out = reasons("dedup_near", rows, cfg(tmp_path, dedup_near={"threshold": 0.7}))
    assert out[0] is None and out[2] is None and out[1].startswith("near duplicate of p sample 0 (estimated Jaccard")


def test_decontaminate_uses_the_test_split_and_named_sets(tmp_path):
    extra = tmp_path / "other_eval.jsonl"
    write_jsonl(extra, [{"question": "What is the capital city of the small country of Luxembourg in Europe?", "answer": "x"}])
    c = cfg(tmp_path, decontaminate={"eval_sets": [str(extra)]})
    rows = [
        row(),
        row(id="leak", question="A farmer has 17 sheep and all but 9 run away. How many are left?"),
        row(id="leak2", rationale="Recall: what is the capital city of the small country of Luxembourg in Europe? It is Luxembourg."),
    ]
    out = reasons("decontaminate", rows, c)
    assert out[0] is None and "8-gram 'a farmer has 17 sheep and all but'" in out[1] and "'what is the capital city of the small'" in out[2]


def test_select_strategies(tmp_path):
    rows = [row(sample=0, rationale="a b c d"), row(sample=1, rationale="a b"), row(sample=2, rationale="A b."), row(id="q", sample=0)]
    assert reasons("select", rows, cfg(tmp_path, select={"strategy": "shortest"}))[:3] == [
        "not among the 1 shortest traces of its problem",
        None,
        "not among the 1 shortest traces of its problem",
    ]
    out = reasons("select", rows, cfg(tmp_path, select={"strategy": "distinct", "max_per_problem": 5}))
    assert out == [None, None, "not among the 5 distinct traces of its problem", None]


def test_run_filters_counts_add_up_in_order(tmp_path):
    c = cfg(tmp_path, order=["parse", "correct", "dedup_exact"])
    rows = [
        row(),
        row(sample=1),
        row(sample=2, key="8", verdict="wrong", rationale="x"),
        row(sample=3, key=None, verdict="unparseable", reason="no answer"),
    ]
    kept, rejected, funnel = run_filters(rows, c)
    assert len(kept) + len(rejected) == 4 and [r.rejected_by for r in rejected] == ["parse", "correct", "dedup_exact"]
    assert [(f["in"], f["out"]) for f in funnel.values()] == [(4, 3), (3, 2), (2, 1)]


def test_teacher_accuracy_per_trace_and_per_problem():
    rows = [row(sample=0, key="8", verdict="wrong"), row(sample=1), row(sample=2), row(id="q", key="1", verdict="wrong")]
    acc = teacher_accuracy(rows)
    assert acc == {"traces": 0.5, "problems": 2, "first_sample": 0.0, "majority_vote": 0.5, "any_sample": 0.5}


def test_exact_key_fast_path_matches_normalize():
    import hashlib

    from llmdistill.stages.filter.dedup import exact_key, normalize

    texts = ["Sam has 3 + 4 = 7 apples.  The answer is 7.", "IT'S (7)!\tok\n", "it’s 7 — ok…", "it's 7 - ok...", "x\x1fy"]
    for t in texts:
        assert exact_key(t) == hashlib.blake2b(normalize(t).encode(), digest_size=16).digest(), t
    assert exact_key(texts[2]) == exact_key(texts[3])  # curly and straight punctuation alike
