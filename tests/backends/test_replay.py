"""Replaying existing completions: alignment by position or id, and the real PaLM SVAMP files."""

import json

import pytest
from typer.testing import CliRunner

from llmdistill.backends import Request, SamplingParams
from llmdistill.backends.replay import ReplayBackend
from llmdistill.cli import app
from llmdistill.config.file import load_config
from llmdistill.errors import UserError
from llmdistill.jsonl import read_rows
from llmdistill.outputs import stage_dir
from llmdistill.records import FilteredTrace, Trace
from tests.conftest import ROOT, SVAMP


def test_positional_lists_concatenate_and_align_by_index(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(["one", "two"]))
    (tmp_path / "b.json").write_text(json.dumps(["three"]))
    b = ReplayBackend("T", replay={"train": [str(tmp_path / "a.json"), str(tmp_path / "b.json")]}, split="train")
    b.check_alignment(["x", "y", "z"])
    out = b.generate([Request(id="z", index=2, prompt="p"), Request(id="x", index=0, prompt="p")], SamplingParams())
    assert [o[0].text for o in out] == ["three", "one"] and out[0][0].finish_reason == "unknown"
    with pytest.raises(UserError, match="hold 3 completions for 4 problems"):
        b.check_alignment(["x", "y", "z", "w"])


def test_jsonl_rows_align_by_id_and_sample(tmp_path):
    rows = [{"id": "x", "text": "x0"}, {"id": "x", "sample": 1, "text": "x1"}, {"id": "y", "completion": "y0"}]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    b = ReplayBackend("T", replay={"test": [str(tmp_path / "r.jsonl")]}, split="test")
    b.check_alignment(["x", "y"])
    assert [c.text for c in b.generate([Request(id="x", index=5, prompt="p")], SamplingParams(n=2, temperature=1))[0]] == ["x0", "x1"]
    with pytest.raises(UserError, match="no completion for id 'y' sample 1"):
        b.generate([Request(id="y", index=0, prompt="p")], SamplingParams(n=2, temperature=1))
    with pytest.raises(UserError, match=r"1 problem ids have no completion \(e.g. \['z'\]\), 1 rows match no problem"):
        b.check_alignment(["x", "z"])


def test_bad_replay_files(tmp_path):
    with pytest.raises(UserError, match="no files for split 'train'"):
        ReplayBackend("T", replay={"test": ["x"]}, split="train")
    with pytest.raises(UserError, match="replay file not found"):
        ReplayBackend("T", replay={"train": [str(tmp_path / "none.json")]}, split="train")
    (tmp_path / "bad.jsonl").write_text('{"id": "x", "text": "a"}\n{"text": "b"}\n')
    with pytest.raises(UserError, match="bad.jsonl:2: expected a JSON row with 'id' and 'text'"):
        ReplayBackend("T", replay={"train": [str(tmp_path / "bad.jsonl")]}, split="train")


def test_svamp_palm_replay_writes_800_traces_with_provenance(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(app, ["generate", "configs/svamp_palm.yaml", "--set", f"output_dir={tmp_path}"])
    assert result.exit_code == 0, result.output
    rows = read_rows(tmp_path / "generate" / "traces.jsonl", Trace)
    assert len(rows) == 800 and len({r.key for r in rows}) == 800
    r = rows[0]
    assert r.teacher == "PaLM-540B" and r.backend == "replay" and r.template_hash and r.created_at > 0 and r.sampling["n"] == 1
    assert r.completion == json.loads((SVAMP / "palm" / "train_CoT_0.json").read_text())[0]
    assert rows[500].completion == json.loads((SVAMP / "palm" / "train_CoT_1.json").read_text())[0]
    result = CliRunner().invoke(app, ["filter", "configs/svamp_palm.yaml", "--set", f"output_dir={tmp_path}"])
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "filter" / "stats.json").read_text())
    assert 0.72 <= stats["teacher_accuracy"] <= 0.76, stats["teacher_accuracy"]  # PaLM-540B on SVAMP train
    rejected = read_rows(tmp_path / "filter" / "rejected.jsonl", FilteredTrace)
    assert stats["rows_in"] == 800 == stats["kept"] + len(rejected)
    assert all(r.rejected_by and r.reason for r in rejected)
    assert sum(f["in"] - f["out"] for f in stats["funnel"].values()) == len(rejected)
    result = CliRunner().invoke(
        app,
        [
            "generate",
            "configs/svamp_palm.yaml",
            "--set",
            f"output_dir={tmp_path / 'short'}",
            "--set",
            "teacher.replay.train=[data/svamp/palm/train_CoT_0.json]",
        ],
    )
    assert result.exit_code == 2 and "hold 500 completions for 800 problems" in result.output
    cfg = load_config(ROOT / "configs" / "svamp_palm.yaml")
    assert cfg.teacher.backend == "replay"


def test_svamp_palm_teacher_evaluates_from_replay(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(
        app, ["evaluate", "configs/svamp_palm.yaml", "--set", f"output_dir={tmp_path}", "--set", "evaluate.models=[teacher]"]
    )
    assert result.exit_code == 0, result.output
    teacher = json.loads((tmp_path / "evaluate" / "report.json").read_text())["models"]["teacher"]
    assert teacher["n"] == 200 and 0.75 <= teacher["accuracy"] <= 0.80 and teacher["backend"] == "replay"
    lo, hi = teacher["ci"]
    assert lo < teacher["accuracy"] < hi and 0.05 < hi - lo < 0.15  # about +-6 points on 200 problems


def test_replay_of_the_first_rows_when_the_split_is_limited(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "configs/svamp_palm.yaml",
            "--set",
            f"output_dir={tmp_path}",
            "--set",
            "data.max_test=10",
            "--set",
            "evaluate.models=[teacher]",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in (tmp_path / "evaluate" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and rows[3]["output"] == json.loads((SVAMP / "palm" / "test_CoT_0.json").read_text())[3]


def test_positional_replay_stays_aligned_when_a_row_is_left_out(tmp_path, make_config, scripted):
    """A row whose gold answer cannot be read is left out; every other problem keeps its own completion."""
    from llmdistill.config.file import load_config
    from llmdistill.stages.generate.run import generate

    rows = [{"question": f"Q{i}: what is {i} + 1?", "answer": a} for i, a in enumerate(["1", "N/A", "3", "4"])]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "palm.json").write_text(json.dumps([f"for row {i}. The answer is {i + 1}." for i in range(4)]))
    cfg = load_config(
        make_config(
            data={"path": str(tmp_path / "d")},
            teacher={"backend": "replay", "batch_size": 4, "replay": {"train": [str(tmp_path / "palm.json")]}},
        )
    )
    stats = generate(cfg)
    traces = read_rows(stage_dir(cfg, "generate") / "traces.jsonl", Trace)
    assert stats["data"]["unreadable_gold"] == 1 and [t.completion for t in traces] == [
        "for row 0. The answer is 1.",
        "for row 2. The answer is 3.",
        "for row 3. The answer is 4.",
    ]
