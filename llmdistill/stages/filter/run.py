"""Stage 2, filter: parse each trace into rationale and answer, check it, and clean the set.

Filters run in ``filter.order``; the first one that rejects a row names itself and its reason
in ``rejected.jsonl``. Rows in = rows kept + rows rejected, always, and ``stats.json`` has the
funnel (rows in and out of each filter) and the teacher's accuracy on the split.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import time
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from llmdistill.answers.checking import check_trace
from llmdistill.atomic import atomic_open, fresh_dir, remove_ours
from llmdistill.buckets import Buckets, h64
from llmdistill.config import Config
from llmdistill.data import iter_split
from llmdistill.jsonl import RowAppender, iter_rows
from llmdistill.outputs import StageRun, require_complete, stage_dir
from llmdistill.prompts import answer_stops, load_prompt
from llmdistill.records import FilteredTrace, Trace
from llmdistill.stages.filter.pool import FeaturePool, workers_for
from llmdistill.stages.filter.rules import FEATURE_FILTERS, judge_all, make_filter
from llmdistill.stages.filter.stream import CHUNK, Pass, chunks, filter_passes, judge

log = logging.getLogger(__name__)


def run_filters(rows: list[FilteredTrace], cfg: Config) -> tuple[list[FilteredTrace], list[FilteredTrace], dict]:
    """(kept, rejected, funnel) of a list held in memory; each rejected row carries the filter's
    name and reason. The stage streams the same rules (``filter_traces``) with the same result."""
    kept, rejected, funnel = rows, [], {}
    for name in cfg.filter.order:
        t0 = time.perf_counter()
        survivors, dropped = judge(kept, judge_all(name, kept, cfg), name)
        rejected.extend(dropped)
        funnel[name] = {"in": len(kept), "out": len(survivors), "seconds": round(time.perf_counter() - t0, 3)}
        kept = survivors
    return kept, rejected, funnel


ANSWERS = np.dtype([("h", np.uint64), ("key", np.uint64), ("sample", np.uint32), ("ok", np.uint8), ("has_key", np.uint8)])
KEPT = np.dtype([("h", np.uint64)])


class Accuracy:
    """The teacher's accuracy, counted as rows stream by: per trace, and per problem the first
    sample, the majority vote and any sample (pass@n).

    Each row is a 29-byte record (hashes of its id and answer, its sample, whether correct),
    spilled to disk by bucket (``llmdistill.buckets``); ``result`` folds a bucket of problems at a
    time. Per problem the fold keeps a tuple (first sample, its verdict correct, any sample
    correct, answers, extra): ``answers`` is the one answer seen with ``extra`` its count (the
    common case: the majority is then correct exactly when any sample is) or, once answers
    differ, their counts with ``extra`` the set of correct ones (ties go to the answer seen first)."""

    def __init__(self, parent: Path | None = None):
        self.traces = self.correct = 0
        self.records = Buckets(ANSWERS, parent=parent)
        self.pending: list[tuple] = []

    def add(self, r: FilteredTrace) -> None:
        if r.verdict == "unlabeled" or r.rationalized:
            return
        ok, key = r.verdict == "correct", r.answer_key
        self.traces += 1
        self.correct += ok
        self.pending.append((h64(r.id), 0 if key is None else h64(key), r.sample, ok, key is not None))
        if len(self.pending) >= 8192:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            self.records.add(np.array(self.pending, dtype=ANSWERS))
            self.pending = []

    def result(self) -> dict:
        self._flush()
        if not self.traces:
            self.records.close()
            return {"traces": None}
        n = first = anyc = maj = 0
        with self.records:
            for bucket in self.records.buckets():
                problems: dict[int, tuple] = {}
                for h, key, sample, ok, has_key in bucket.tolist():  # in the order the rows came
                    _fold(problems, h, sample, bool(ok), key if has_key else None)
                n += len(problems)
                for _, first_ok, any_ok, answers, right in problems.values():
                    first += first_ok
                    anyc += any_ok
                    if isinstance(answers, Counter):
                        maj += answers.most_common(1)[0][0] in right
                    else:
                        maj += answers is not None and any_ok
        return {
            "traces": round(self.correct / self.traces, 4),
            "problems": n,
            "first_sample": round(first / n, 4),
            "majority_vote": round(maj / n, 4),
            "any_sample": round(anyc / n, 4),
        }


def _fold(problems: dict, pid, sample: int, ok: bool, key) -> None:
    """One row into its problem's tuple (see ``Accuracy``)."""
    g = problems.get(pid)
    if g is None:
        problems[pid] = (sample, ok, ok, key, 0 if key is None else 1)
        return
    first, first_ok, any_ok, answers, extra = g  # extra: the one answer's count, or the correct answers
    if sample < first:
        first, first_ok = sample, ok
    if key is not None:
        if answers is None:
            answers, extra = key, 1
        elif not isinstance(answers, Counter) and key == answers:
            extra += 1
        elif not isinstance(answers, Counter):  # answers differ: count them (a correct sample so far had the one answer)
            answers, extra = Counter({answers: extra, key: 1}), ({answers} if any_ok else set()) | ({key} if ok else set())
        else:
            answers[key] += 1
            if ok:
                extra.add(key)
    problems[pid] = (first, first_ok, any_ok or ok, answers, extra)


def teacher_accuracy(rows: list[FilteredTrace]) -> dict:
    """Per-trace accuracy, and per problem: first sample, majority vote, any sample (pass@n)."""
    acc = Accuracy()
    for r in rows:
        acc.add(r)
    return acc.result()


@contextmanager
def gc_paused():
    """Rows are acyclic; the cyclic collector rescanning hundreds of thousands of them while they
    are created costs a third of the stage's time, and frees nothing."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class _Checked:
    """The first pass's input: the traces of the selected problems, parsed and checked, counted."""

    def __init__(self, cfg: Config, parent: Path | None = None):
        self.cfg = cfg
        self.stop = answer_stops(load_prompt(cfg.data.prompt), cfg.data)
        # the selected problems' id hashes, sorted: 8 bytes a problem (a split of millions streams)
        ids = array("Q", (h64(p.id) for p in iter_split(cfg.data, cfg.data.train_split)))
        self.selected = np.frombuffer(ids, dtype=np.uint64)
        self.selected.sort()
        self.rows_in = self.outside = self.cut = self.thinking = 0
        self.verdicts: Counter = Counter()
        self.accuracy = Accuracy(parent)

    def __iter__(self) -> Iterator[FilteredTrace]:
        rows = iter_rows(stage_dir(self.cfg, "generate") / "traces.jsonl", Trace)
        for chunk in chunks(rows, CHUNK):  # looked up in the selection a chunk at a time
            hashes = np.fromiter((h64(t.id) for t in chunk), dtype=np.uint64, count=len(chunk))
            at = np.searchsorted(self.selected, hashes).clip(max=max(0, len(self.selected) - 1))
            inside = self.selected[at] == hashes if len(self.selected) else np.zeros(len(chunk), dtype=bool)
            for t, chosen in zip(chunk, inside.tolist(), strict=True):
                if not chosen:  # generated for a larger data.max_train earlier: kept by generate, not part of this run
                    self.outside += 1
                    continue
                r = check_trace(t, self.stop, self.cfg.data)
                self.rows_in += 1
                self.verdicts[r.verdict] += 1
                self.cut += r.cut is not None
                self.thinking += r.thinking is not None
                self.accuracy.add(r)
                yield r


def filter_traces(cfg: Config, overwrite: bool = False) -> dict:
    """Parse, check and clean the traces of the selected train problems; returns the stage stats.

    Streams: rows go through the filters a chunk at a time and out to ``kept.jsonl`` and (via one
    file per filter, joined in filter order) ``rejected.jsonl``, so memory holds only the filters'
    state. With a group filter (vote, select) in the order the rows reaching it are written to a
    temporary file and read again in a second pass; the result is the same as judging all rows
    at once (``run_filters``). The text-heavy filters' per-row work runs in ``filter.workers``
    processes beside this one."""
    require_complete(cfg, "generate")
    with StageRun(cfg, "filter", overwrite) as run, gc_paused():
        names = list(cfg.filter.order)
        work = run.dir / ".work"  # scratch: per-filter rejected rows, rows between passes, MinHashes
        fresh_dir(work, "scratch")  # a stale one of ours (a killed run) is removed first
        filters = {n: make_filter(n, cfg, work) for n in names}
        funnel = {n: {"in": 0, "out": 0, "seconds": 0.0} for n in names}
        rejected = {n: RowAppender(work / f"rejected.{n}.jsonl", fsync=False) for n in names}
        workers = workers_for(cfg, stage_dir(cfg, "generate") / "traces.jsonl")
        heavy = [n for n in names if n in FEATURE_FILTERS]
        pool = FeaturePool(cfg, heavy, workers) if workers and heavy else None
        checked = _Checked(cfg, work)
        kept_ids = Buckets(KEPT, parent=work)  # the kept rows' problems, to count them
        source: Iterable[FilteredTrace] = checked
        kept = kept_rationalized = 0
        passes = filter_passes(names)
        try:
            for k, stage_names in enumerate(passes):
                last = k == len(passes) - 1
                out_path = work / ("kept.jsonl" if last else f"pass{k + 1}.jsonl")
                observer = None if last else filters[passes[k + 1][0]]
                with RowAppender(out_path, fsync=False) as out:
                    for chunk in Pass(stage_names, filters, funnel, rejected, pool).run(source):
                        if observer is not None:
                            t0 = time.perf_counter()
                            observer.observe(chunk)
                            funnel[passes[k + 1][0]]["seconds"] += time.perf_counter() - t0
                        elif chunk:
                            kept += len(chunk)
                            kept_rationalized += sum(r.rationalized for r in chunk)
                            kept_ids.add(np.fromiter((h64(r.id) for r in chunk), dtype=np.uint64, count=len(chunk)).view(KEPT))
                        out.write(chunk)
                if k == 0 and checked.outside:
                    log.info(
                        "filter: %d traces belong to problems outside the current selection (data.max_train) and are not used",
                        checked.outside,
                    )
                source = iter_rows(out_path, FilteredTrace)
        finally:
            if pool is not None:
                pool.close()
        for f in [*rejected.values(), *filters.values()]:
            getattr(f, "close", lambda: None)()
        accuracy = checked.accuracy.result()
        with kept_ids:
            kept_problems = sum(len(np.unique(b["h"])) for b in kept_ids.buckets())
        _join([work / f"rejected.{n}.jsonl" for n in names], run.dir / "rejected.jsonl")
        os.replace(work / "kept.jsonl", run.dir / "kept.jsonl")
        remove_ours(work)
        rejected_by = {n: funnel[n]["in"] - funnel[n]["out"] for n in names if funnel[n]["in"] > funnel[n]["out"]}
        assert kept + sum(rejected_by.values()) == checked.rows_in
        stats = {
            "rows_in": checked.rows_in,
            "traces_outside_selection": checked.outside,
            "kept": kept,
            "rejected": sum(rejected_by.values()),
            "rejected_by": rejected_by,
            "funnel": {n: {**v, "seconds": round(v["seconds"], 3)} for n, v in funnel.items()},
            "workers": pool.workers if pool else 0,
            "worker_cpu_seconds": round(pool.seconds, 3) if pool else 0.0,
            "verdicts": dict(checked.verdicts),
            "teacher_accuracy": accuracy["traces"],
            "teacher_accuracy_detail": accuracy,
            "kept_problems": kept_problems,
            "kept_rationalized": kept_rationalized,
            "cut_continuations": checked.cut,
            "with_thinking": checked.thinking,
        }
        log.info("filter kept %d of %d traces (teacher accuracy %s)", kept, checked.rows_in, accuracy["traces"])
        return run.finish(stats, outputs=[run.dir / "kept.jsonl", run.dir / "rejected.jsonl"])


def _join(parts: list[Path], dest: Path) -> None:
    """The per-filter rejected files, one after the other, as one file (atomically)."""
    with atomic_open(dest, "wb") as out:
        for part in parts:
            with open(part, "rb") as fh:
                shutil.copyfileobj(fh, out, 1 << 20)
