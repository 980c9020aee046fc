"""``train.report_to``: training metrics to the trackers transformers knows, none by default."""

from __future__ import annotations

import json

import pytest

from llmdistill.config.train import REPORTERS
from llmdistill.errors import UserError
from llmdistill.outputs import stage_dir
from llmdistill.stages.train import train
from tests.conftest import fake_tensorboardx, run_to_filter


def test_the_names_are_transformers_names():
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    assert sorted(REPORTERS) == sorted(INTEGRATION_TO_CALLBACK)


def test_tensorboard_gets_the_training_metrics_inside_the_run_folder(make_config, scripted, tmp_path, monkeypatch):
    """The tensorboard callback, with tensorboardX's writer (a stand-in recording its calls)."""
    monkeypatch.syspath_prepend(str(fake_tensorboardx(tmp_path / "site")))
    cfg = run_to_filter(make_config, scripted, train={"report_to": ["tensorboard"], "max_steps": 2, "logging_steps": 1})
    train(cfg)
    logs = list((stage_dir(cfg, "train") / "checkpoints" / "runs").glob("*/scalars.jsonl"))
    assert len(logs) == 1
    scalars = [json.loads(line) for line in logs[0].read_text().splitlines()]
    assert [s["step"] for s in scalars if s["tag"] == "train/loss"] == [1, 2]


def test_by_default_nothing_is_reported(make_config, scripted):
    cfg = run_to_filter(make_config, scripted)
    train(cfg)
    assert not (stage_dir(cfg, "train") / "checkpoints" / "runs").exists()


def test_a_tracker_that_is_not_installed_is_refused_before_training(make_config, scripted):
    cfg = run_to_filter(make_config, scripted, train={"report_to": ["wandb"]})
    with pytest.raises(UserError, match=r"train.report_to \['wandb'\]: the tracker's package is not installed \(pip install wandb\)"):
        train(cfg)
    assert not (stage_dir(cfg, "train") / "examples.jsonl").exists()
