"""What each stage returns: its ``stats.json`` as a typed pydantic model.

The named fields are the ones a caller reaches for; every other statistic the stage wrote is kept
too (``model_extra``, or ``result.model_dump()`` for all of it), so nothing in the file is lost.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict


class StageResult(BaseModel):
    """The bookkeeping every stage writes: which run made the folder, from what, and when."""

    model_config = ConfigDict(extra="allow", frozen=True)

    stage: str
    folder: Path  # the stage folder holding the outputs
    config_hash: str
    run_id: str
    upstream_run_id: str | None = None
    started_at: float
    finished_at: float
    seconds: float


class GenerateResult(StageResult):
    problems: int
    traces: int
    rationalized: int = 0
    prompt_tokens: int
    completion_tokens: int
    finish_reasons: dict[str, int] = {}


class FilterResult(StageResult):
    rows_in: int
    kept: int
    rejected: int
    rejected_by: dict[str, int]
    funnel: dict[str, dict]
    teacher_accuracy: float | None
    kept_problems: int


class TrainResult(StageResult):
    mode: str
    kd: str
    steps: int
    examples: int
    train_loss: float | None
    best_eval_accuracy: float | None = None
    student_init: str | None = None


class EvaluateResult(StageResult):
    problems: int
    accuracy: dict[str, float | None]  # by model: teacher, student, untrained student
    ci: dict[str, list[float]] = {}  # 95% interval of each accuracy
    gap_closed: float | None = None


class ExportResult(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    folder: Path
    format: str
    sizes: dict[str, int]
    pushed_to: str | None = None


class CurveResult(BaseModel):
    """``ld.curve``: the folder with report.md, curve.png and curve.json, and the reading."""

    model_config = ConfigDict(extra="allow", frozen=True)

    folder: Path
    points: int
    ran: int
    done: int
    pending: int
    report: Path
    summary: list[str]


RESULTS: dict[str, type[StageResult]] = {
    "generate": GenerateResult,
    "filter": FilterResult,
    "train": TrainResult,
    "evaluate": EvaluateResult,
}


def stage_result(stage: str, stats: dict, folder: Path) -> StageResult:
    """A stage's statistics (as returned, or read from its ``stats.json``) as its typed result."""
    return RESULTS[stage].model_validate({**stats, "folder": folder})


class RunResult(BaseModel):
    """``run``: what happened to each stage ('ran' or 'skipped') and each stage's result."""

    model_config = ConfigDict(frozen=True)

    done: dict[str, str]
    generate: GenerateResult
    filter: FilterResult
    train: TrainResult
    evaluate: EvaluateResult
