"""Row schemas for what flows between stages: problem -> trace -> training example -> result.

Every row has a stable ``id``; downstream rows only add fields, so any file can be read by a
person with ``head`` and by the next stage with the same model.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Row(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(Row):
    """One task instance: a question and, for labelled data, its gold answer (as written)."""

    id: str
    question: str
    answer: str | None = None
    split: str = "train"


class Trace(Problem):
    """One teacher completion for a problem; ``sample`` numbers the completions of one problem."""

    sample: int = 0
    prompt: str
    completion: str
    finish_reason: Literal["stop", "length", "unknown"] = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    teacher: str = ""
    backend: str = ""
    template_hash: str = ""
    sampling: dict = Field(default_factory=dict)
    seed: int = 0
    created_at: float = 0.0
    rationalized: bool = False  # generated with the gold answer as a hint (STaR)
    top_logprobs: list | None = None  # per generated token: [[token, logprob], ...] (teacher top-k)

    @property
    def key(self) -> tuple[str, int]:
        return (self.id, self.sample)


class FilteredTrace(Trace):
    """A trace after parsing and checking; rejected rows carry the filter and its reason."""

    rationale: str | None = None
    pred: str | None = None
    verdict: Literal["correct", "wrong", "unparseable", "unlabeled"] = "unparseable"
    rejected_by: str | None = None
    reason: str | None = None


class TrainExample(Row):
    """A prompt/completion pair for SFT, traced back to its problem and sample."""

    id: str
    sample: int = 0
    prompt: str
    completion: str


class EvalResult(Row):
    """One model's answer to one test problem, checked with the same checker for every model."""

    id: str
    model: str
    question: str
    gold: str | None
    output: str
    pred: str | None
    verdict: Literal["correct", "wrong", "unparseable", "unlabeled"]
    finish_reason: Literal["stop", "length", "unknown"] = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
