"""Row schemas for what flows between stages: problem -> trace -> training example -> result.

Every row has a stable ``id``; downstream rows only add fields, so any file can be read by a
person with ``head`` and by the next stage with the same model.
"""

from __future__ import annotations

from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

# The row schemas' version, written on every row. Rows of an older version load in a newer one
# (fields are only added, with defaults: tests/test_records.py loads rows written by earlier
# versions); a row of a newer version is refused with the reason instead of a field error.
SCHEMA_VERSION = 1


class Row(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION

    @field_validator("schema_version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v > SCHEMA_VERSION:
            raise ValueError(
                f"written by a newer llmdistill (row schema {v}; this version reads up to {SCHEMA_VERSION}): upgrade llmdistill to read it"
            )
        return v


class Problem(Row):
    """One task instance: a question and, for labelled data, its gold answer (as written)."""

    id: str
    question: str
    answer: str | None = None  # gold, normalized: a number/equation, a choice letter, or a label name
    choices: list[str] | None = None
    split: str = "train"
    row: int | None = None  # the row's position in its split (replayed outputs align on it, even when rows were left out)


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
    completion_ids: list[int] | None = None  # the generated token ids, stored with top_logprobs
    reasoning: str | None = None  # a reasoning model's thinking, when the server returns it apart (reasoning_content)

    @property
    def key(self) -> tuple[str, int]:
        return (self.id, self.sample)


class FilteredTrace(Trace):
    """A trace after parsing and checking; rejected rows carry the filter and its reason."""

    rationale: str | None = None
    pred: str | None = None  # the answer as written
    answer_key: str | None = None  # the answer normalized (number, letter, label), for voting
    verdict: Literal["correct", "wrong", "unparseable", "unlabeled"] = "unparseable"
    majority: str | None = None  # vote: the problem's majority answer and its share of the samples
    agreement: float | None = None
    rejected_by: str | None = None
    reason: str | None = None
    thinking: str | None = None  # a reasoning model's thinking (<think> ... </think>, or the server's reasoning_content)
    cut: str | None = None  # where and why a runaway continuation was cut off before reading the answer
    truncated: bool = False  # stopped by max_new_tokens, or inside a thinking that never closed

    def training_rationale(self, keep_thinking: bool, tags: bool) -> str:
        """The rationale a student learns from this trace. A reasoning teacher's thinking is kept
        (inside ``<think>`` tags for a CoT student, which then thinks before it answers) or dropped,
        leaving what the teacher wrote after it."""
        after = (self.rationale or "").strip()
        if not self.thinking or not keep_thinking:
            return after
        if tags:
            return f"<think>\n{self.thinking.strip()}\n</think>\n\n{after}".strip()
        return f"{self.thinking.strip()}\n\n{after}".strip()


R = TypeVar("R", bound=Row)


def extend_row(cls: type[R], base: Row, **fields) -> R:
    """``cls`` (a subclass of ``base``'s schema) from a validated row plus computed fields.

    The same object ``cls.model_construct(**base.__dict__, **fields)`` builds, at a tenth of its
    cost: the filter stage makes one per trace. ``fields`` must be exactly the fields ``cls`` adds.
    """
    values = {**base.__dict__, **fields}
    obj = cls.__new__(cls)
    object.__setattr__(obj, "__dict__", values)
    object.__setattr__(obj, "__pydantic_fields_set__", set(values))
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj


class TrainExample(Row):
    """A prompt/completion pair for SFT, traced back to its problem and sample.

    ``task`` is the step-by-step task (label or rationale; answer_rationale for both in one sequence;
    cot for a whole trace); ``split`` puts
    the example in the training or the validation set.
    """

    id: str
    sample: int = 0
    task: Literal["cot", "label", "rationale", "answer_rationale"] = "cot"
    split: Literal["train", "validation"] = "train"
    prompt: str
    completion: str


class EvalResult(Row):
    """One model's answer to one test problem, checked with the same checker for every model."""

    id: str
    model: str
    sample: int = 0  # 0: the greedy answer; 1..n: sampled answers (evaluate.samples)
    question: str
    gold: str | None
    output: str
    pred: str | None
    verdict: Literal["correct", "wrong", "unparseable", "unlabeled"]
    answer_key: str | None = None  # the normalized answer, for majority voting
    finish_reason: Literal["stop", "length", "unknown"] = "stop"
    cut: str | None = None  # where and why a runaway continuation was cut off before reading the answer
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
