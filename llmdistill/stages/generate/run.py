"""Stage 1, generate: the teacher writes rationale-plus-answer traces for the train split.

Crash-safe and resumable: traces are appended and fsynced batch by batch; a rerun discards a torn
last line, keeps every trace whose provenance matches the current settings, and generates only the
missing ``(id, sample)`` pairs. Each request has its own seed, so a resumed run samples what an
uninterrupted one would have. Operational settings (concurrency, timeouts, batch sizes...) can
change between runs; content settings cannot without ``--overwrite`` (see ``stage``).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import asdict
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from llmdistill.answers.checking import check_trace
from llmdistill.atomic import move_aside
from llmdistill.backends import Backend, SamplingParams, teacher_backend
from llmdistill.config import Config
from llmdistill.data import load_split
from llmdistill.jsonl import RowAppender, recover_rows
from llmdistill.outputs import StageRun, refusal
from llmdistill.prompts import PromptTemplate, answer_stops, load_prompt
from llmdistill.records import Problem, Trace
from llmdistill.stages.generate.teacher import ask_teacher, sampling_params

if TYPE_CHECKING:
    from llmdistill.stages.generate.ray import RayWriter

log = logging.getLogger(__name__)


def _check_provenance(rows: list[Trace], problems: dict[str, Problem], want: dict) -> list[str]:
    """Why rows of the selected problems cannot be kept: a setting in their provenance differs from
    the current one, or their problem's question changed. Empty when every row fits."""
    reasons = []
    for r in rows:
        p = problems.get(r.id)
        if p is None:
            continue  # outside the current selection: kept in the file, not used
        have = {"teacher": r.teacher, "template_hash": r.template_hash, "sampling": r.sampling}
        diff = [f"{k}: {have[k]!r} -> {want[k]!r}" for k in want if have[k] != want[k]]
        if p.question != r.question:
            diff.append(f"the question of {r.id} changed")
        if diff:
            reasons.append(f"trace {r.id}#{r.sample}: {'; '.join(diff)}")
    return reasons


class _Writer:
    """Asks the teacher in batches and appends the new traces, with a progress bar."""

    def __init__(
        self,
        cfg: Config,
        backend: Backend,
        template: PromptTemplate,
        params: SamplingParams,
        out: RowAppender,
        rows: list[Trace],
        have: set,
    ):
        self.cfg, self.backend, self.template, self.params, self.out, self.rows, self.have = cfg, backend, template, params, out, rows, have
        self.tokens_out = 0
        self.problems_done = 0

    def keep(self, rows: list[Trace]) -> None:
        """Append the traces not already written, and count them."""
        rows = [r for r in rows if r.key not in self.have]
        self.out.write(rows)
        self.rows.extend(rows)  # the stage's traces so far: no need to read the file back
        self.have.update(r.key for r in rows)
        self.tokens_out += sum(r.completion_tokens for r in rows)

    def run(
        self, problems: list[Problem], index: dict[str, int], first_sample: int = 0, hint: bool = False, desc: str = "generate"
    ) -> None:
        bar = tqdm(total=len(problems), desc=desc, unit="problem")
        t0, batch = time.time(), self.cfg.teacher.batch_size
        for start in range(0, len(problems), batch):
            chunk = problems[start : start + batch]
            for traces in ask_teacher(self.cfg, self.backend, self.template, self.params, chunk, index, first_sample, hint):
                self.keep(traces)  # written (and fsynced) as they arrive
            bar.update(len(chunk))
            self.problems_done += len(chunk)
            bar.set_postfix(tok_s=f"{self.tokens_out / max(time.time() - t0, 1e-9):.1f}")
        bar.close()


def _needs_hint(cfg: Config, problems: list[Problem], rows: list[Trace], stop: list[str]) -> list[Problem]:
    """Labelled problems none of whose first ``n`` samples is correct."""
    solved = {t.id for t in rows if t.sample < cfg.generate.n and check_trace(t, stop, cfg.data).verdict == "correct"}
    return [p for p in problems if p.answer is not None and p.id not in solved]


def generate(cfg: Config, backend: Backend | None = None, overwrite: bool = False) -> dict:
    """Run the teacher over the train split; returns the stage stats. ``backend`` is for tests.

    Resumes from the traces already in the folder: every row whose provenance (teacher, prompt
    template, sampling settings, question) matches the current config is kept, and only missing
    ``(id, sample)`` pairs are asked for. Rows of problems outside the current selection
    (``data.max_train``) stay in the file, unused.
    """
    with StageRun(cfg, "generate", overwrite) as run:
        path = run.dir / "traces.jsonl"
        split = cfg.data.train_split
        loaded = load_split(cfg.data, split)
        problems = loaded.problems
        by_id = {p.id: p for p in problems}
        template = load_prompt(cfg.data.prompt)
        g = cfg.generate
        params = sampling_params(cfg, template)
        rows = recover_rows(path, Trace)
        bad = _check_provenance(
            rows, by_id, {"teacher": cfg.teacher.model_name_or_path, "template_hash": template.hash, "sampling": asdict(params)}
        )
        if bad and not overwrite:
            raise refusal(f"{path}: {len(bad)} of {len(rows)} traces were written with other settings", bad[:1])
        if bad:
            move_aside(path)
            rows = []
        selected = [t for t in rows if t.id in by_id]  # grows with every batch written (see _Writer)
        have = {t.key for t in selected}
        if have:
            log.info("resuming: %d traces of the selected problems already in %s", len(have), path)
        index: dict[str, int] = {}  # replayed outputs align on the row, even when rows were left out
        for p in problems:
            assert p.row is not None  # load_split numbers every problem
            index[p.id] = p.row
        n = g.n
        todo = [p for p in problems if any((p.id, s) not in have for s in range(n))]
        writer: RayWriter | _Writer | None = None
        t0, owned = time.time(), backend is None
        with RowAppender(path) as out:

            def ask(batch: list[Problem], **kw) -> None:
                nonlocal backend, writer
                if not batch:
                    return
                if writer is None and g.engine == "ray":  # the engines start in the Ray actors
                    from llmdistill.stages.generate.ray import RayWriter

                    writer = RayWriter(cfg, template, params, out, selected, have, split, [p.id for p in problems], loaded.notes["rows"])
                elif writer is None:  # start the engine only when there is something to ask
                    backend = backend or teacher_backend(cfg.teacher, g.seed, split)
                    backend.check_alignment([p.id for p in problems], first_rows=cfg.data.max_train is not None, rows=loaded.notes["rows"])
                    writer = _Writer(cfg, backend, template, params, out, selected, have)
                writer.run(batch, index, **kw)

            ask(todo)
            if g.rationalize:
                hard = _needs_hint(cfg, problems, selected, answer_stops(template, cfg.data))
                hard = [p for p in hard if any((p.id, s) not in have for s in range(n, 2 * n))]
                log.info("rationalizing %d problems with no correct sample", len(hard))
                ask(hard, first_sample=n, hint=True, desc="rationalize")
        tokens_out, done = (writer.tokens_out, writer.problems_done) if writer else (0, 0)
        if owned and backend is not None:
            backend.close()  # free the engine's memory before the next stage
        engine = {"backend": backend.stats()} if backend is not None and hasattr(backend, "stats") else {}  # e.g. per-endpoint failures
        if writer is not None and hasattr(writer, "stats"):
            engine["ray"] = writer.stats()
        return run.finish(
            {**_summary(selected, problems, done, tokens_out, time.time() - t0), "data": loaded.notes, **engine}, outputs=[path]
        )


def _summary(rows: list[Trace], problems: list[Problem], done: int, new_tokens_out: int, seconds: float) -> dict:
    """Totals over every trace; rates over what this run generated (a resume skips the rest)."""
    return {
        "problems": len(problems),
        "traces": len(rows),
        "rationalized": sum(r.rationalized for r in rows),
        "prompt_tokens": sum(r.prompt_tokens for r in rows),
        "completion_tokens": sum(r.completion_tokens for r in rows),
        "finish_reasons": dict(Counter(r.finish_reason for r in rows)),
        "generation_seconds": round(seconds, 2),
        "problems_this_run": done,
        "completion_tokens_this_run": new_tokens_out,
        "output_tokens_per_s": round(new_tokens_out / seconds, 2) if new_tokens_out else None,
        "problems_per_s": round(done / seconds, 3) if done else None,
    }
