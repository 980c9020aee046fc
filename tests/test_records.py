"""Rows written by earlier versions of the toolkit load in this one: traces are paid for, and an
upgrade must never make them unreadable. ``tests/fixtures/rows/v0`` was written by the release
before rows carried ``schema_version``, ``v1`` by the first that did; a new version adds a folder.
"""

import pytest
from pydantic import Field

from llmdistill.jsonl import read_rows, recover_rows
from llmdistill.records import SCHEMA_VERSION, EvalResult, FilteredTrace, Problem, Trace, TrainExample
from tests.conftest import ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "rows"
SCHEMAS = {"problem": Problem, "trace": Trace, "filtered_trace": FilteredTrace, "train_example": TrainExample, "eval_result": EvalResult}


@pytest.mark.parametrize("version", sorted(p.name for p in FIXTURES.iterdir()))
def test_rows_written_by_every_earlier_version_load(version):
    for name, model in SCHEMAS.items():
        rows = read_rows(FIXTURES / version / f"{name}.jsonl", model)
        assert rows and all(r.schema_version <= SCHEMA_VERSION for r in rows)
        assert rows[0].id == "svamp-0"
    assert f"v{SCHEMA_VERSION}" in {p.name for p in FIXTURES.iterdir()}, "a new SCHEMA_VERSION needs its fixture folder"


def test_rows_of_this_version_load_after_a_field_is_added(tmp_path):
    """What the next version does to this one's rows: a schema that gained a defaulted field reads
    them (in the resume path too), and they keep every value."""

    class TraceWithMore(Trace):
        judge_score: float | None = Field(default=None)

    path = tmp_path / "traces.jsonl"
    path.write_bytes((FIXTURES / f"v{SCHEMA_VERSION}" / "trace.jsonl").read_bytes())
    [old] = read_rows(path, Trace)
    [new] = recover_rows(path, TraceWithMore)
    assert new.judge_score is None and new.model_dump(exclude={"judge_score"}) == old.model_dump()
