"""The Python API: the CLI's commands as functions returning typed results.

    import llmdistill as ld

    cfg = ld.load_config("configs/quickstart.yaml", {"train.max_steps": 50})
    result = ld.run(cfg)                       # every stage, skipping those already complete
    accuracy = result.evaluate.accuracy["student"]
    kept = ld.filter(cfg).kept                 # or one stage at a time

Each stage function takes the config and ``overwrite`` (move outputs made with other settings
aside instead of refusing) and returns the stage's ``stats.json`` as a pydantic model
(``llmdistill.result_types``). Errors a user can fix are ``llmdistill.UserError``, one line each.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from llmdistill.config import Config
from llmdistill.errors import UserError
from llmdistill.result_types import (
    CurveResult,
    EvaluateResult,
    ExportResult,
    FilterResult,
    GenerateResult,
    RunResult,
    StageResult,
    TrainResult,
    stage_result,
)


def load_config(path: str | Path, overrides: Mapping[str, object] | Sequence[str] | None = None) -> Config:
    """Read and validate a run config. ``overrides``: ``{"train.max_steps": 50}``, or the CLI's
    ``--set`` strings (``["train.max_steps=50"]``)."""
    from llmdistill.config.file import load_config as load

    if isinstance(overrides, Mapping):
        overrides = [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    return load(path, list(overrides or []))


def _stage(stage: str, cfg: Config, overwrite: bool) -> StageResult:
    from llmdistill.outputs import stage_dir
    from llmdistill.pipeline import stage_function

    stats = stage_function(stage)(cfg, overwrite=overwrite)
    return stage_result(stage, stats, stage_dir(cfg, stage))


def generate(cfg: Config, overwrite: bool = False) -> GenerateResult:
    """The teacher's traces for the train split (``<output_dir>/generate/traces.jsonl``); resumes."""
    return _stage("generate", cfg, overwrite)  # type: ignore[return-value]


def filter(cfg: Config, overwrite: bool = False) -> FilterResult:
    """The traces the filters keep (``filter/kept.jsonl``), every other with its reason."""
    return _stage("filter", cfg, overwrite)  # type: ignore[return-value]


def train(cfg: Config, overwrite: bool = False) -> TrainResult:
    """The student trained on the kept traces (``train/model``)."""
    return _stage("train", cfg, overwrite)  # type: ignore[return-value]


def evaluate(cfg: Config, overwrite: bool = False) -> EvaluateResult:
    """Student, teacher (and untrained student) on the test split: accuracies with intervals."""
    return _stage("evaluate", cfg, overwrite)  # type: ignore[return-value]


def export(cfg: Config, to: str | Path | None = None) -> ExportResult:
    """The kept traces as an HF dataset folder (``to``, default ``<output_dir>/export``), with the
    rejected ones, TRL-ready views and a card; ``cfg.export`` says the rest."""
    from llmdistill.stages.export import export as run_export

    if to is not None:
        cfg = cfg.model_copy(update={"export": cfg.export.model_copy(update={"to": str(to)})})
    return ExportResult.model_validate(run_export(cfg))


def curve(cfg: Config, overwrite: bool = False, report_only: bool = False) -> CurveResult:
    """The teacher-budget curve of ``cfg.curve`` (fractions x modes x seeds): trains and evaluates
    the points not done yet (``report_only``: none, the report rewritten from those done); the
    numbers are in ``<folder>/curve.json``."""
    from llmdistill.curve import curve as run_curve

    return CurveResult.model_validate(run_curve(cfg, overwrite=overwrite, report_only=report_only))


def run(cfg: Config, force: bool = False, overwrite: bool = False) -> RunResult:
    """Every stage in order, skipping one whose output is complete for this config (unless ``force``)."""
    from llmdistill.pipeline import run as run_pipeline

    done = run_pipeline(cfg, force=force, overwrite=overwrite)
    return RunResult.model_validate({"done": done, **results(cfg)})


def results(cfg: Config) -> dict[str, StageResult]:
    """The results of the stages that have finished for this config (read from their folders)."""
    from llmdistill.outputs import read_stats, stage_dir

    out = {}
    for stage in ("generate", "filter", "train", "evaluate"):
        stats = read_stats(cfg, stage)
        if stats is not None:
            out[stage] = stage_result(stage, stats, stage_dir(cfg, stage))
    return out


__all__ = ["Config", "UserError", "curve", "evaluate", "export", "filter", "generate", "load_config", "results", "run", "train"]
