"""The Python API: ``import llmdistill as ld``, each stage a function returning a typed result."""

from __future__ import annotations

import subprocess
import sys

import pytest

import llmdistill as ld
from llmdistill.result_types import EvaluateResult, FilterResult, GenerateResult, TrainResult
from tests.conftest import ROOT, correct_script, correct_test_script


def test_the_pipeline_from_python_returns_typed_results(make_config, scripted):
    scripted.SCRIPT = {**correct_script(), **correct_test_script()}
    cfg = ld.load_config(make_config(), {"train.max_steps": 1, "evaluate.models": ["teacher", "student"]})
    assert cfg.train.max_steps == 1
    result = ld.run(cfg)
    assert result.done == {"generate": "ran", "filter": "ran", "train": "ran", "evaluate": "ran"}
    assert isinstance(result.generate, GenerateResult) and result.generate.traces == 6
    assert isinstance(result.filter, FilterResult) and result.filter.kept == 6 and result.filter.teacher_accuracy == 1.0
    assert isinstance(result.train, TrainResult) and result.train.steps == 1 and result.train.mode == cfg.train.mode
    assert isinstance(result.evaluate, EvaluateResult) and result.evaluate.accuracy["teacher"] == 1.0
    assert result.filter.folder == ROOT / cfg.output_dir / "filter" or result.filter.folder.name == "filter"
    assert result.generate.model_extra["problems_this_run"] == 6  # every statistic of stats.json is kept
    again = ld.run(cfg)  # complete stages are skipped, their results read back the same
    assert set(again.done.values()) == {"skipped"} and again.filter == result.filter
    assert ld.results(cfg)["train"] == result.train
    assert ld.filter(cfg, overwrite=False).kept == 6  # one stage at a time


def test_export_from_python(make_config, scripted, tmp_path):
    import datasets

    scripted.SCRIPT = correct_script()
    cfg = ld.load_config(make_config(), ["train.max_steps=1"])
    ld.generate(cfg)
    ld.filter(cfg)
    done = ld.export(cfg, to=tmp_path / "out")
    assert done.folder == tmp_path / "out" and done.sizes["train"] == 6
    assert len(datasets.load_from_disk(str(tmp_path / "out"))["train"]) == 6


def test_a_user_error_is_the_api_s_exception(tmp_path):
    with pytest.raises(ld.UserError, match="config file not found"):
        ld.load_config(tmp_path / "nope.yaml")


def test_version_on_the_command_line():
    out = subprocess.run([sys.executable, "-m", "llmdistill", "--version"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == f"llmdistill {ld.__version__}"


def test_an_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        ld.nope  # noqa: B018
