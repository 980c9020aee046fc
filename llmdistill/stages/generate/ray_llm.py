"""``generate.ray.processor: ray_llm``: a vLLM teacher through Ray's own LLM batch API
(``ray.data.llm``: ``vLLMEngineProcessorConfig`` + ``build_processor``), the fast path on GPUs.

The driver renders every prompt with the teacher's tokenizer (the local engine's text), hands
Ray one row per missing ``(id, sample)`` (Ray's vLLM stage returns one completion a row), and
turns each output row back into a trace; it stays the only writer of ``traces.jsonl``, so resume
is the local engine's. Sample ``s`` of a problem is seeded with the local engine's request seed
when ``n`` is 1, so greedy and single-sample runs write the local traces; with ``n > 1`` each
sample has a seed of its own (reproducible, but not the local engine's n-from-one-seed draws).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict

from llmdistill.backends import SamplingParams, request_seed
from llmdistill.config import Config
from llmdistill.prompts import PromptTemplate, build_prompt, wants_chat
from llmdistill.records import Problem, Trace


def sample_seed(params: SamplingParams, problem_id: str, sample: int) -> int:
    """The seed of one sample; for a one-sample run (sample = first_sample) it is the local
    engine's request seed."""
    return request_seed(params.seed + sample, problem_id)


def llm_rows(
    cfg: Config,
    template: PromptTemplate,
    params: SamplingParams,
    tokenizer,
    problems: list[Problem],
    written: Callable[[str, int], bool],
    first_sample: int = 0,
    hint: bool = False,
) -> list[dict]:
    """Ray's input: one row per missing (problem, sample), with its prompt text and sampling params."""
    from llmdistill.backends.transformers import chat_text

    chat = wants_chat(cfg.data.prompt_format, bool(getattr(tokenizer, "chat_template", None)))
    rows = []
    for p in problems:
        text = None
        for s in range(first_sample, first_sample + params.n):
            if written(p.id, s):
                continue
            if text is None:
                text = chat_text(tokenizer, build_prompt(template, p.question, cfg.data.num_shots, chat, hint=p.answer if hint else None))
            seed = sample_seed(params, p.id, s)
            rows.append(
                {
                    "problem": p.model_dump_json(),
                    "sample": s,
                    "seed": seed,
                    "prompt": text,
                    "sampling_params": {
                        "n": 1,
                        "temperature": params.temperature,
                        "top_p": params.top_p if params.temperature > 0 else 1.0,
                        "max_tokens": params.max_new_tokens,
                        "stop": list(params.stop) or None,
                        "seed": seed,
                        **({"logprobs": params.logprobs} if params.logprobs else {}),
                    },
                }
            )
    return rows


def trace_of(cfg: Config, template: PromptTemplate, params: SamplingParams, row: dict, hint: bool = False) -> Trace:
    """One output row of Ray's vLLM stage as a trace with the local engine's provenance.

    Ray's row has no finish reason: a completion that used all ``max_new_tokens`` is taken as cut
    ("length"), which the truncated filter drops, so a doubtful row is never kept as whole."""
    problem = Problem.model_validate_json(row["problem"])
    n_out = int(row.get("num_generated_tokens") or 0)
    top, steps, tokens = None, row.get("logprobs"), row.get("generated_tokens")  # lists, or arrays from a pandas batch
    if params.logprobs and steps is not None:
        top = [
            sorted(([int(tid), float(v["logprob"])] for tid, v in step.items()), key=lambda x: -x[1])[: params.logprobs] for step in steps
        ]
    ids = [] if tokens is None else [int(t) for t in tokens]
    return Trace(
        **problem.model_dump(),
        sample=int(row["sample"]),
        prompt=row["prompt"],
        completion=row.get("generated_text") or "",
        finish_reason="length" if n_out >= params.max_new_tokens else "stop",
        prompt_tokens=int(row.get("num_input_tokens") or 0),
        completion_tokens=n_out,
        teacher=cfg.teacher.model_name_or_path,
        backend="vllm",
        template_hash=template.hash,
        sampling=asdict(params),
        seed=int(row["seed"]),
        created_at=time.time(),
        rationalized=hint,
        top_logprobs=top,
        completion_ids=ids if params.logprobs else None,
    )


def processor_options(cfg: Config) -> dict:
    """The arguments of Ray's vLLM processor for the teacher: ``replicas`` engines, each with the
    teacher's parallelism."""
    t, r = cfg.teacher, cfg.generate.ray
    engine: dict[str, object] = {
        "dtype": t.dtype,
        "tensor_parallel_size": t.tensor_parallel_size,
        "pipeline_parallel_size": t.pipeline_parallel_size,
        "enable_prefix_caching": t.enable_prefix_caching,
        "seed": cfg.generate.seed,
    }
    if t.max_model_len:
        engine["max_model_len"] = t.max_model_len
    if t.gpu_memory_utilization:
        engine["gpu_memory_utilization"] = t.gpu_memory_utilization
    if t.distributed_executor_backend:
        engine["distributed_executor_backend"] = t.distributed_executor_backend
    if t.enforce_eager:
        engine["enforce_eager"] = True
    return dict(
        model_source=t.model_name_or_path,
        engine_kwargs=engine,
        concurrency=r.replicas,
        batch_size=r.batch_size or t.batch_size,
        chat_template_stage=False,
        tokenize_stage=False,
        detokenize_stage=True,
    )  # the driver renders the prompt text itself


def processor_config(cfg: Config):
    """Ray's vLLM processor config for the teacher (``processor_options``)."""
    from ray.data.llm import vLLMEngineProcessorConfig

    return vLLMEngineProcessorConfig(**processor_options(cfg))


def build(cfg: Config):
    """``ds -> ds`` of output rows: Ray's processor with our row columns carried through."""
    from ray.data.llm import build_processor

    keep = ("problem", "sample", "seed", "prompt")
    return build_processor(
        processor_config(cfg),
        preprocess=lambda row: {k: row[k] for k in (*keep, "sampling_params")},
        postprocess=lambda row: {
            k: row.get(k) for k in (*keep, "generated_text", "generated_tokens", "num_generated_tokens", "num_input_tokens", "logprobs")
        },
    )
