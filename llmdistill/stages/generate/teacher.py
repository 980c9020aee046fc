"""A batch of problems through the teacher, as traces with provenance: what every engine (local,
the Ray actor pool) runs, so they write the same traces from the same prompts and seeds."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict

from llmdistill.backends import Backend, Request, SamplingParams, request_seed
from llmdistill.config import Config
from llmdistill.prompts import PromptTemplate, build_prompt, wants_chat
from llmdistill.records import Problem, Trace


def sampling_params(cfg: Config, template: PromptTemplate) -> SamplingParams:
    """The teacher's sampling settings (``generate``) with the prompt file's stop strings."""
    g = cfg.generate
    return SamplingParams(
        n=g.n,
        temperature=g.temperature,
        top_p=g.top_p,
        max_new_tokens=g.max_new_tokens,
        stop=template.stop,
        seed=g.seed,
        logprobs=g.logprobs,
    )


def ask_teacher(
    cfg: Config,
    backend: Backend,
    template: PromptTemplate,
    params: SamplingParams,
    chunk: list[Problem],
    index: dict[str, int],
    first_sample: int = 0,
    hint: bool = False,
) -> Iterator[list[Trace]]:
    """One batch of problems through the teacher: every sample of each, as traces with provenance,
    yielded as the engine finishes them (a list per request or group of requests that finished together), so every
    completion can be written before a later request of the batch fails."""
    chat = wants_chat(cfg.data.prompt_format, backend.supports_chat)
    requests = [
        Request(
            id=p.id,
            index=index[p.id],
            seed=request_seed(params.seed + first_sample, p.id),
            prompt=build_prompt(template, p.question, cfg.data.num_shots, chat, hint=p.answer if hint else None),
        )
        for p in chunk
    ]
    sampling = asdict(params)  # once: dataclasses.asdict per trace was a third of the stage's own time
    for done in backend.generate_each(requests, params):
        yield [
            Trace(
                **p.model_dump(),
                sample=first_sample + s,
                prompt=backend.prompt_text(r.prompt),
                completion=c.text,
                finish_reason=c.finish_reason,
                prompt_tokens=c.prompt_tokens,
                completion_tokens=c.completion_tokens,
                teacher=backend.model_name,
                backend=backend.name,
                template_hash=template.hash,
                sampling=sampling,
                seed=r.seed,
                created_at=time.time(),
                rationalized=hint,
                top_logprobs=c.top_logprobs,
                completion_ids=c.token_ids if params.logprobs else None,
                reasoning=c.reasoning,
            )
            for i, completions in sorted(done.items())
            for p, r in [(chunk[i], requests[i])]
            for s, c in enumerate(completions)
        ]


def batched(items: Iterable, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
