"""Backends behind one small interface, so stages never learn about concrete engines.

A backend turns rendered prompts into completions; ``get_backend`` imports the heavy engine
(torch, vllm) only when a backend of that kind is asked for.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Literal, Protocol


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    seed: int = 0


@dataclass
class Completion:
    text: str
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int
    latency_s: float = 0.0  # wall time of the request, shared evenly across a batch


class Backend(Protocol):
    name: str
    model_name: str
    tokenizer: object  # a transformers tokenizer, for the chat template

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        """One list of ``params.n`` completions per prompt, in prompt order."""

    def num_parameters(self) -> int: ...

    def close(self) -> None: ...


BACKENDS = {"transformers": "llmdistill.backends.hf:TransformersBackend"}


def get_backend(kind: str, **kwargs) -> Backend:
    module, cls = BACKENDS[kind].split(":")
    return getattr(importlib.import_module(module), cls)(**kwargs)
