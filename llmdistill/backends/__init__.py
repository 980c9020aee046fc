"""Backends behind one small interface, so stages never learn about concrete engines.

A backend turns requests (a plain prompt string, or chat messages) into completions.
``get_backend`` imports the heavy engine (torch, vllm, httpx) only when that backend is asked for.
"""

from __future__ import annotations

import importlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

Prompt = str | list[dict]  # completion text, or chat messages [{"role", "content"}]


@dataclass
class Request:
    id: str  # the problem id
    index: int  # the problem's position in its split (replay aligns on it)
    prompt: Prompt
    seed: int = 0  # per-request seed, so sampling does not depend on batching


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    seed: int = 0
    logprobs: int | None = None  # top-k logprobs of each generated token


@dataclass
class Completion:
    text: str
    finish_reason: Literal["stop", "length", "unknown"]  # unknown: replayed text
    prompt_tokens: int
    completion_tokens: int
    latency_s: float = 0.0  # wall time of the request, shared evenly across a batch
    # One entry per generated token: [[token, logprob], ...] for the top-k candidates; token is an
    # id for local engines and a string (or "token_id:N") for OpenAI-compatible servers.
    top_logprobs: list[list[list]] | None = None
    token_ids: list[int] | None = None  # the generated token ids (local engines), for offline logit distillation
    reasoning: str | None = None  # a reasoning model's thinking, when the server returns it apart from the text


class Backend(ABC):
    """The interface every engine implements; the defaults suit engines without the optional parts."""

    name: str = ""
    model_name: str = ""
    supports_chat: bool = False  # takes chat messages (else only plain prompts)

    @abstractmethod
    def generate(self, requests: list[Request], params: SamplingParams) -> list[list[Completion]]:
        """One list of ``params.n`` completions per request, in request order."""

    def generate_each(self, requests: list[Request], params: SamplingParams) -> Iterator[dict[int, list[Completion]]]:
        """``{position in requests: completions}`` of the requests that finished together, as they
        finish, so the caller can write every completion as soon as it exists. An engine that
        answers a batch at once yields it whole; one whose requests finish apart (a server)
        yields each on arrival and, when a request fails for good, first every one that
        finished, then raises."""
        yield dict(enumerate(self.generate(requests, params)))

    def prompt_text(self, prompt: Prompt) -> str:
        """The prompt as the model sees it, for the trace's provenance."""
        return prompt if isinstance(prompt, str) else json.dumps(prompt)

    def check_alignment(self, problem_ids: list[str], first_rows: bool = False, rows: int | None = None) -> None:  # noqa: B027 (optional)
        """Fail before any work when the engine cannot answer these problems (replayed outputs).
        ``rows``: the split's row count, when some rows were left out (unreadable gold answers)."""

    def num_parameters(self) -> int | None:
        return None

    def close(self) -> None:  # noqa: B027 (optional: most engines hold nothing to free)
        """Free the engine's memory."""


BACKENDS = {
    "transformers": "llmdistill.backends.transformers:TransformersBackend",
    "vllm": "llmdistill.backends.vllm:VLLMBackend",
    "openai": "llmdistill.backends.openai:OpenAIBackend",
    "replay": "llmdistill.backends.replay:ReplayBackend",
}
# The ``teacher`` settings each backend reads besides model_name_or_path (and batch_size, by which
# the generate stage sends its requests to every backend). A setting of another backend is refused
# at config load: it would be ignored.
KNOBS: dict[str, tuple[str, ...]] = {
    "transformers": ("dtype", "device", "batch_size"),
    "vllm": (
        "dtype",
        "tensor_parallel_size",
        "pipeline_parallel_size",
        "distributed_executor_backend",
        "max_model_len",
        "gpu_memory_utilization",
        "enable_prefix_caching",
        "enforce_eager",
    ),
    "openai": ("base_url", "api", "api_key_env", "concurrency", "timeout_s", "max_retries", "backoff_s"),
    "replay": ("replay",),
}
# What a backend takes from the run rather than the teacher section.
RUN_ARGS: dict[str, tuple[str, ...]] = {"vllm": ("seed",), "replay": ("split",)}


def get_backend(kind: str, **kwargs) -> Backend:
    """The backend ``kind``: a built-in one, or a plugin's (a registered name or ``module:Class``)."""
    if kind in BACKENDS:
        module, cls = BACKENDS[kind].split(":")
        return getattr(importlib.import_module(module), cls)(**kwargs)
    return plugin_backend(kind)(**kwargs)


def backend_class(kind: str) -> type[Backend]:
    """The class ``get_backend(kind)`` would build (nothing is started)."""
    if kind in BACKENDS:
        module, cls = BACKENDS[kind].split(":")
        return getattr(importlib.import_module(module), cls)
    return plugin_backend(kind)


def plugin_backend(name: str) -> type[Backend]:
    """The ``Backend`` subclass a plugin names; anything else is refused in one line."""
    from llmdistill.errors import UserError
    from llmdistill.plugins import load

    cls = load("backend", name)
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise UserError(f"teacher.backend {name!r} is {cls!r}, not a subclass of llmdistill.backends.Backend")
    return cls


def teacher_backend(teacher, seed: int, split: str) -> Backend:
    """The teacher's engine for one split, from the ``teacher`` section (a ``TeacherConfig``). A
    plugin's backend is built with ``model_name_or_path`` and ``teacher.options``."""
    if teacher.backend not in BACKENDS:
        return get_backend(teacher.backend, model_name_or_path=teacher.model_name_or_path, **teacher.options)
    run = {"seed": seed, "split": split}
    kwargs = {k: getattr(teacher, k) for k in KNOBS.get(teacher.backend, ())}
    kwargs |= {k: run[k] for k in RUN_ARGS.get(teacher.backend, ())}
    return get_backend(teacher.backend, model_name_or_path=teacher.model_name_or_path, **kwargs)


def request_seed(base: int, problem_id: str) -> int:
    """A stable per-problem seed: the same problem samples the same way whatever its batch."""
    import zlib

    return (base * 1_000_003 + zlib.crc32(problem_id.encode())) % (2**31)
