"""The ``data`` section: where the problems come from, how they are asked and how answers are checked.
Every stage reads it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import field_validator, model_validator

from llmdistill.config.base import Section, content

ANSWER_TYPES = ("numeric", "choice", "label", "math")  # built in; a plugin may add its own checker


class DataConfig(Section):
    """Where the problems come from and how they are asked and checked."""

    path: str = content(description="Local folder with <split>.jsonl/.json/.csv/.parquet, a local file, or an HF dataset id.")
    name: str | None = content(None)  # HF dataset config name
    train_split: str = content("train")
    test_split: str = content("test")
    id_field: str | None = content("id")  # missing field -> "<split>-<row index>"
    question_field: str = content("question")
    # Compose the question from several fields instead, e.g. "Premise: {premise}\nHypothesis: {hypothesis}"
    question_format: str | None = content(None)
    answer_field: str = content("answer")
    # numeric: a number or equation (GSM8K "#### 72" and SVAMP "( 10.0 * 45.0 )" included);
    # choice: a letter or choice text, with choices_field; label: a name, an index into labels, or a
    # boolean (true/false -> the label named yes/true or no/false); math: LaTeX, checked by math-verify
    # (pip install 'llmdistill[math]'), gold the last \boxed{} of a solution or the answer as given.
    # Or a plugin's checker: a name registered under the "llmdistill.checkers" entry point, or a
    # "module:function" path; it gets the stated answer and the gold answer as written.
    answer_type: str = content("numeric")
    choices_field: str | None = content(None)  # a list of strings, or {"label": [...], "text": [...]}
    labels: list[str] | None = content(None)
    gold_regex: str | None = content(None)  # a regex whose group 1 is the gold answer inside answer_field
    answer_regex: str | None = content(None)  # a regex whose group 1 is the model's answer (default: "The answer is ...")
    tolerance: float = content(1e-4)
    max_train: int | None = content(None, ge=1)
    max_test: int | None = content(None, ge=1)
    prompt: str = content("prompts/arithmetic_cot.yaml")
    num_shots: int | None = content(None, ge=0)  # None: every exemplar in the prompt file
    # chat: messages through the model's chat template (or the server's); completion: plain Q:/A:
    # text; auto: chat when the backend can take chat messages.
    prompt_format: Literal["auto", "chat", "completion"] = content("auto")

    @field_validator("answer_type")
    @classmethod
    def _known_answer_type(cls, v: str) -> str:
        from llmdistill.plugins import require_known

        require_known(
            "checker", v, ANSWER_TYPES, "unknown data.answer_type", "module:function",
            lambda f: None if callable(f) else f"data.answer_type {v!r} is not a function check(pred, gold)",
        )  # fmt: skip
        return v

    @model_validator(mode="after")
    def _task_fields(self):
        if self.answer_type == "choice" and not self.choices_field:
            raise ValueError("data.answer_type 'choice' needs data.choices_field")
        if self.answer_type == "label" and not self.labels:
            raise ValueError("data.answer_type 'label' needs data.labels")
        if self.answer_type == "math" and (self.choices_field or self.labels):
            raise ValueError("data.answer_type 'math' reads no data.choices_field or data.labels; remove them")
        unread = set()
        if self.answer_type != "label":
            unread.add("labels")
        if self.answer_type not in ANSWER_TYPES:
            unread |= {"choices_field"}  # a plugin's checker gets the stated answer and the gold answer only
        if self.answer_type != "numeric":
            unread.add("tolerance")  # numbers compared within it; the other types compare exactly (math: math-verify)
        if self.name is not None and (Path(self.path).exists() or self.path.startswith((".", "/"))):
            unread.add("name")  # the config name of a hub dataset; a local folder or file has none
        self.refuse_unread(
            "data", set(type(self).model_fields) - unread, f"with data.answer_type {self.answer_type!r} and data.path {self.path!r}"
        )
        for name in ("gold_regex", "answer_regex"):
            pattern = getattr(self, name)
            if pattern is not None:
                try:
                    if re.compile(pattern).groups < 1:
                        raise ValueError(f"data.{name} needs a capturing group")
                except re.error as e:
                    raise ValueError(f"data.{name} is not a valid regex: {e}") from None
        return self
