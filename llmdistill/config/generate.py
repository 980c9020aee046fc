"""The ``generate`` section: how the teacher samples its traces, and on which engine."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from llmdistill.config.base import Section, content, operational


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
            self.ray.refuse_unread(
                "generate.ray",
                set(type(self.ray).model_fields) - {"num_cpus_per_replica", "num_gpus_per_replica"},
                "with processor 'ray_llm' (each engine gets teacher.tensor_parallel_size x pipeline_parallel_size GPUs)",
            )
        return self
