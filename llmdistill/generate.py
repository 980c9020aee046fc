"""Stage 1, generate: the teacher writes rationale-plus-answer traces for the train split.

Traces are appended and fsynced batch by batch, so a killed run resumes where it stopped:
rerunning the same command generates only the missing ``(id, sample)`` pairs.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from tqdm.auto import tqdm

from llmdistill.backends import Backend, SamplingParams, get_backend
from llmdistill.config import Config
from llmdistill.data import load_problems
from llmdistill.jsonl import RowAppender, recover_rows
from llmdistill.prompts import PromptRenderer, load_prompt
from llmdistill.records import Problem, Trace
from llmdistill.stage import StageRun

log = logging.getLogger(__name__)


def sampling_params(cfg: Config, stop: list[str]) -> SamplingParams:
    g = cfg.generate
    return SamplingParams(n=g.n, temperature=g.temperature, top_p=g.top_p, max_new_tokens=g.max_new_tokens, stop=stop, seed=g.seed)


def _resume(path: Path, hash_path: Path, config_hash: str) -> list[Trace]:
    """Rows of an interrupted run with the same config; a different config starts afresh."""
    if hash_path.is_file() and hash_path.read_text().strip() == config_hash:
        rows = recover_rows(path, Trace)
        if rows:
            log.info("resuming: %d traces already in %s", len(rows), path)
        return rows
    path.unlink(missing_ok=True)
    hash_path.write_text(config_hash)
    return []


def generate(cfg: Config, backend: Backend | None = None) -> dict:
    """Run the teacher over the train split; returns the stage stats. ``backend`` is for tests."""
    with StageRun(cfg, "generate") as run:
        out = run.dir / "traces.jsonl"
        done = _resume(out, run.dir / ".config_hash", cfg.stage_hash("generate"))
        have = {t.key for t in done}
        problems = load_problems(cfg.data, cfg.data.train_split)
        todo = [p for p in problems if any((p.id, s) not in have for s in range(cfg.generate.n))]
        template = load_prompt(cfg.data.prompt)
        if todo:
            backend = backend or get_backend(cfg.teacher.backend, **cfg.teacher.model_dump(exclude={"backend"}))
            _run_teacher(cfg, backend, template, todo, have, out)
        rows = recover_rows(out, Trace)
        return run.finish(_summary(rows, problems, time.time() - run.t0))


def _run_teacher(cfg: Config, backend: Backend, template, todo: list[Problem], have: set, out: Path) -> None:
    render = PromptRenderer(template, backend.tokenizer, cfg.data.num_shots, cfg.data.chat_template)
    params = sampling_params(cfg, template.stop)
    batch = cfg.teacher.batch_size
    bar = tqdm(total=len(todo), desc="generate", unit="problem")
    tokens_out, t0 = 0, time.time()
    with RowAppender(out) as writer:
        for start in range(0, len(todo), batch):
            chunk = todo[start : start + batch]
            prompts = [render(p.question) for p in chunk]
            # A seed per batch: an uninterrupted run with the same batching is reproducible.
            outs = backend.generate(prompts, SamplingParams(**{**asdict(params), "seed": params.seed + start}))
            rows = [
                Trace(
                    **p.model_dump(), sample=s, prompt=prompt, completion=c.text, finish_reason=c.finish_reason,
                    prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens, teacher=backend.model_name,
                    backend=backend.name, template_hash=template.hash, sampling=asdict(params), created_at=time.time(),
                )
                for p, prompt, completions in zip(chunk, prompts, outs)
                for s, c in enumerate(completions)
                if (p.id, s) not in have
            ]
            writer.write(rows)
            tokens_out += sum(r.completion_tokens for r in rows)
            bar.update(len(chunk))
            bar.set_postfix(tok_s=f"{tokens_out / max(time.time() - t0, 1e-9):.1f}")
    bar.close()


def _summary(rows: list[Trace], problems: list[Problem], seconds: float) -> dict:
    tokens_out = sum(r.completion_tokens for r in rows)
    return {
        "problems": len(problems),
        "traces": len(rows),
        "prompt_tokens": sum(r.prompt_tokens for r in rows),
        "completion_tokens": tokens_out,
        "finish_reasons": dict(Counter(r.finish_reason for r in rows)),
        "output_tokens_per_s": round(tokens_out / max(seconds, 1e-9), 2),
    }
