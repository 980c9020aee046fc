"""The ``evaluate`` section: which models answer the test split, and how the report is made."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from llmdistill.config.base import Section, content, operational


class BaselineModel(Section):
    """Another model to evaluate beside the teacher and student (e.g. a same-size model trained elsewhere)."""

    name: str = content()
    model_name_or_path: str = content()
    task: Literal["cot", "label"] = content("cot")  # the prompt it is asked with
    num_shots: int | None = content(None)  # None: data.num_shots


class EvaluateConfig(Section):
    models: list[Literal["teacher", "student_init", "student"]] = content(["teacher", "student_init", "student"])
    baselines: list[BaselineModel] = []
    max_new_tokens: int = content(256, ge=1)
    batch_size: int = operational(16, ge=1)
    # Besides the greedy answer: `samples` sampled answers per problem for maj@n and pass@k.
    samples: int = content(0, ge=0)
    temperature: float = content(0.7, gt=0)
    top_p: float = content(1.0, gt=0, le=1)
    pass_k: list[int] = content([1])
    seed: int = content(0)
    bootstrap: int = content(10000, ge=100)  # resamples for the confidence intervals
    confidence: float = content(0.95, gt=0, lt=1)
    disagreements: int = content(3, ge=0)  # sample problems where teacher and student differ, in the report
    # Label-prompt students (label, step_by_step) answer without a rationale; also ask them for one
    # on the first N test problems, to read (rationales.jsonl; not scored).
    inspect_rationales: int = content(0, ge=0)
    plot: bool = content(True)
    # The engine for the students and baselines (the teacher keeps its own teacher.backend).
    backend: Literal["transformers", "vllm"] = operational("transformers")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = content("float32")
    device: str = operational("auto")  # transformers only; vLLM places the model itself
    gpu_memory_utilization: float | None = operational(None, gt=0, le=1)  # vllm only (None: 0.9 on GPU, 0.4 on CPU)
    max_model_len: int | None = content(None, ge=16)  # vllm only; content: it can cap a generation

    @model_validator(mode="after")
    def _samples(self):
        bad = [k for k in self.pass_k if k < 1 or (self.samples and k > self.samples)]
        if self.samples and bad:
            raise ValueError(f"evaluate.pass_k {bad}: each k must be between 1 and evaluate.samples={self.samples}")
        other = {"transformers": {"gpu_memory_utilization", "max_model_len"}, "vllm": {"device"}}[self.backend]
        if not self.samples:  # greedy answers only
            other |= {"temperature", "top_p", "pass_k"}
        self.refuse_unread(
            "evaluate", set(type(self).model_fields) - other, f"with evaluate.backend {self.backend!r} and samples {self.samples}"
        )
        names = [b.name for b in self.baselines]
        if len(set(names)) != len(names) or set(names) & {"teacher", "student_init", "student"}:
            raise ValueError(f"evaluate.baselines names must be distinct and not teacher/student_init/student: {names}")
        return self
