"""The train stage under several processes: two CPU processes (gloo, launched by torchrun, as
accelerate launches on GPUs) train like one process with the same global batch, and only the main
process writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_to_filter


def _train(config: Path, out: Path, processes: int, overrides: dict) -> dict:
    sets = [a for k, v in {"output_dir": str(out), **overrides}.items() for a in ("--set", f"{k}={v}")]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env |= {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    if processes == 1:
        cmd = [sys.executable, "-m", "llmdistill", "train", str(config), *sets]
    else:
        # torchrun: what `accelerate launch` runs on GPUs (its multi-CPU launch needs mpirun)
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(processes),
            "-m",
            "llmdistill",
            "train",
            str(config),
            *sets,
        ]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    stats = json.loads((out / "train" / "stats.json").read_text())
    return {"stats": stats, "stdout": done.stdout}


def _losses(stats: dict) -> list[float]:
    return [h["loss"] for h in stats["sft"]["log_history"] if "loss" in h]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["cot", "step_by_step"])
def test_two_processes_train_as_one_with_the_same_global_batch(make_config, scripted, tmp_path, mode):
    # 6 train problems, 2 a step: 3 steps are one epoch exactly (an epoch's ragged last batch is
    # evened out by accelerate across processes, which one process does not do)
    cfg = run_to_filter(make_config, scripted, train={"mode": mode, "max_steps": 3, "logging_steps": 1, "learning_rate": 1e-3})
    config = tmp_path / "config.yaml"
    runs = {}
    for name, processes, batch, accumulation in (("one", 1, 2, 1), ("two", 2, 1, 1), ("accumulated", 1, 1, 2)):
        out = tmp_path / name
        shutil.copytree(cfg.output_dir, out)
        runs[name] = _train(
            config, out, processes, {"train.per_device_train_batch_size": batch, "train.gradient_accumulation_steps": accumulation}
        )
    one = _losses(runs["one"]["stats"])
    assert len(one) == 3 and len(set(one)) == 3  # three steps, weights moved
    for name in ("two", "accumulated"):
        assert _losses(runs[name]["stats"]) == pytest.approx(one, abs=1e-4), name
    two = runs["two"]["stats"]
    # the examples and tokens seen are the launch's, summed over its processes
    assert two["seen"] == runs["accumulated"]["stats"]["seen"] == runs["one"]["stats"]["seen"]
    assert two["tokens_seen"] == runs["accumulated"]["stats"]["tokens_seen"]  # (batches of one: no padding in either)
    # written once, by the main process: one model folder that loads, no temporaries; one headline
    from transformers import AutoModelForCausalLM

    model_dir = tmp_path / "two" / "train" / "model"
    AutoModelForCausalLM.from_pretrained(model_dir)
    assert not list((tmp_path / "two" / "train").glob("*.tmp")) and (model_dir / "README.md").is_file()
    assert runs["two"]["stdout"].count("train: done") == 1
    assert len((tmp_path / "two" / "train" / "examples.jsonl").read_text().splitlines()) == two["examples"]


def test_other_stages_refuse_several_processes(make_config, monkeypatch, capsys):
    from typer.testing import CliRunner

    from llmdistill.cli import app

    monkeypatch.setenv("WORLD_SIZE", "2")
    result = CliRunner().invoke(app, ["generate", str(make_config())])
    assert result.exit_code == 2
    assert "only `train` runs under accelerate launch" in result.output
