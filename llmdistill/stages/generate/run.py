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
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from llmdistill.answers.checking import check_trace
from llmdistill.atomic import move_aside
from llmdistill.backends import Backend, SamplingParams, backend_class, teacher_backend
from llmdistill.config import Config
from llmdistill.data import iter_split
from llmdistill.jsonl import RowAppender, iter_recovered
from llmdistill.outputs import StageRun, refusal
from llmdistill.prompts import PromptTemplate, answer_stops, load_prompt
from llmdistill.records import Problem, Trace
from llmdistill.stages.generate.index import HINT_MISSING, MISSING, Plan, SplitIndex, Totals, empty, explain, plan, solved
from llmdistill.stages.generate.teacher import ask_teacher, batched, sampling_params

if TYPE_CHECKING:
    from llmdistill.stages.generate.ray import RayWriter

log = logging.getLogger(__name__)


class _Writer:
    """Asks the teacher in batches and appends the new traces, with a progress bar. Holds no trace:
    the file is the only copy; the totals are counted as rows are written."""

    def __init__(self, cfg: Config, backend: Backend, template: PromptTemplate, params: SamplingParams, out: RowAppender, done: Plan):
        self.cfg, self.backend, self.template, self.params, self.out, self.done = cfg, backend, template, params, out, done
        self.tokens_out = 0
        self.problems_done = 0

    def keep(self, rows: list[Trace]) -> None:
        """Append the traces not already written (a problem asked again for its missing samples
        returns the others too), and count them."""
        rows = [r for r in rows if not self.done.has(r.id, r.sample)]
        self.out.write(rows)
        self.done.totals.add(rows)
        self.tokens_out += sum(r.completion_tokens for r in rows)

    def run(self, problems: Iterable[Problem], total: int, first_sample: int = 0, hint: bool = False, desc: str = "generate") -> None:
        bar = tqdm(total=total, desc=desc, unit="problem")
        t0 = time.time()
        for chunk in batched(problems, self.cfg.teacher.batch_size):
            index = {p.id: p.row for p in chunk}  # replayed outputs align on the row, even when rows were left out
            for traces in ask_teacher(self.cfg, self.backend, self.template, self.params, chunk, index, first_sample, hint):
                self.keep(traces)  # written (and fsynced) as they arrive
            bar.update(len(chunk))
            self.problems_done += len(chunk)
            bar.set_postfix(tok_s=f"{self.tokens_out / max(time.time() - t0, 1e-9):.1f}")
        bar.close()


def _wanting(cfg: Config, split: str, done: Plan, flag: int) -> Iterator[Problem]:
    """The split's problems, streamed again, whose ``flag`` is set in ``done``."""
    flags = done.flags
    for pos, p in enumerate(iter_split(cfg.data, split)):
        if flags[pos] & flag:
            yield p


def generate(cfg: Config, backend: Backend | None = None, overwrite: bool = False) -> dict:
    """Run the teacher over the train split; returns the stage stats. ``backend`` is for tests.

    Resumes from the traces already in the folder: every row whose provenance (teacher, prompt
    template, sampling settings, question) matches the current config is kept, and only missing
    ``(id, sample)`` pairs are asked for. Rows of problems outside the current selection
    (``data.max_train``) stay in the file, unused.

    In memory that does not grow with the run (``index``): the split is streamed (once to hash its
    ids and questions, once more for the problems to ask), the traces file is the only copy of the
    traces and is streamed to resume, the hashes are joined on disk a bucket at a time, and what
    is held is a byte a problem and the running totals.
    """
    with StageRun(cfg, "generate", overwrite) as run:
        path = run.dir / "traces.jsonl"
        split = cfg.data.train_split
        notes: dict = {}
        g = cfg.generate
        n, hints = g.n, bool(g.rationalize)
        index = SplitIndex(iter_split(cfg.data, split, notes), parent=run.dir)
        try:
            log.info("loaded %d %s problems from %s", len(index), split, cfg.data.path)
            template = load_prompt(cfg.data.prompt)
            params = sampling_params(cfg, template)
            want = {"teacher": cfg.teacher.model_name_or_path, "template_hash": template.hash, "sampling": asdict(params)}
            t_scan = time.time()
            done = plan(iter_recovered(path, Trace), index, want, n, hints, parent=run.dir)
            if done.mismatched and not overwrite:
                reasons = explain(done, iter_recovered(path, Trace), want)
                raise refusal(f"{path}: {done.mismatched} of {done.rows} traces were written with other settings", reasons[:1])
            if done.mismatched:
                move_aside(path)
                done = empty(index, n, hints)
            if done.totals.traces:
                log.info(
                    "resuming: %d traces of the selected problems already in %s (indexed in %.1f s)",
                    done.totals.traces,
                    path,
                    time.time() - t_scan,
                )
            writer: RayWriter | _Writer | None = None
            t0, owned = time.time(), backend is None
            with RowAppender(path) as out:

                def ask(problems: Iterable[Problem], total: int, **kw) -> None:
                    nonlocal backend, writer
                    if not total:
                        return
                    if writer is None and g.engine == "ray":  # the engines start in the Ray actors
                        from llmdistill.stages.generate.ray import RayWriter

                        ids = _ids(cfg, split) if aligns(backend_class(cfg.teacher.backend)) else None
                        writer = RayWriter(cfg, template, params, out, done, split, ids, notes["rows"])
                    elif writer is None:  # start the engine only when there is something to ask
                        backend = backend or teacher_backend(cfg.teacher, g.seed, split)
                        if aligns(type(backend)):
                            backend.check_alignment(_ids(cfg, split), first_rows=cfg.data.max_train is not None, rows=notes["rows"])
                        writer = _Writer(cfg, backend, template, params, out, done)
                    writer.run(problems, total, **kw)

                ask(_wanting(cfg, split, done, MISSING), done.count(MISSING))
                if hints:
                    stop = answer_stops(template, cfg.data)
                    solved(
                        iter_recovered(path, Trace),
                        lambda t: t.sample < n and check_trace(t, stop, cfg.data).verdict == "correct",
                        index,
                        done,
                        parent=run.dir,
                    )
                    log.info("rationalizing %d problems with no correct sample", done.count(HINT_MISSING))
                    ask(_wanting(cfg, split, done, HINT_MISSING), done.count(HINT_MISSING), first_sample=n, hint=True, desc="rationalize")
        finally:
            index.close()
        tokens_out, asked = (writer.tokens_out, writer.problems_done) if writer else (0, 0)
        if owned and backend is not None:
            backend.close()  # free the engine's memory before the next stage
        engine = {"backend": backend.stats()} if backend is not None and hasattr(backend, "stats") else {}  # e.g. per-endpoint failures
        if writer is not None and hasattr(writer, "stats"):
            engine["ray"] = writer.stats()
        return run.finish(
            {**_summary(done.totals, len(index), asked, tokens_out, time.time() - t0), "data": notes, **engine}, outputs=[path]
        )


def aligns(cls: type[Backend]) -> bool:
    """Whether the engine checks the split's ids before any work (replayed outputs: it holds
    them anyway). Only then is the list of every id made."""
    return cls.check_alignment is not Backend.check_alignment


def _ids(cfg: Config, split: str) -> list[str]:
    return [p.id for p in iter_split(cfg.data, split)]


def _summary(totals: Totals, problems: int, done: int, new_tokens_out: int, seconds: float) -> dict:
    """Totals over every trace; rates over what this run generated (a resume skips the rest)."""
    return {
        "problems": problems,
        "traces": totals.traces,
        "rationalized": totals.rationalized,
        "prompt_tokens": totals.prompt_tokens,
        "completion_tokens": totals.completion_tokens,
        "finish_reasons": dict(totals.finish_reasons),
        "generation_seconds": round(seconds, 2),
        "problems_this_run": done,
        "completion_tokens_this_run": new_tokens_out,
        "output_tokens_per_s": round(new_tokens_out / seconds, 2) if new_tokens_out else None,
        "problems_per_s": round(done / seconds, 3) if done else None,
    }
