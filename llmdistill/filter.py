"""Stage 2, filter: parse each trace into rationale and answer, check it, and clean the set.

Filters run in ``filter.order``; the first one that rejects a row names itself and its reason
in ``rejected.jsonl``. Rows in = rows kept + rows rejected, always, and ``stats.json`` has the
funnel (rows in and out of each filter) and the teacher's accuracy on the split.
"""

from __future__ import annotations

import gc
import logging
import time
from collections import Counter, defaultdict
from contextlib import contextmanager

from llmdistill.config import Config
from llmdistill.data import load_problems
from llmdistill.filter_rules import FILTER_FUNCTIONS, enabled
from llmdistill.jsonl import iter_rows, write_rows
from llmdistill.prompts import answer_stops, load_prompt
from llmdistill.records import FilteredTrace, Trace
from llmdistill.stage import StageRun, require_complete
from llmdistill.tasks import check_trace, majority

log = logging.getLogger(__name__)


def run_filters(rows: list[FilteredTrace], cfg: Config) -> tuple[list[FilteredTrace], list[FilteredTrace], dict]:
    """(kept, rejected, funnel); each rejected row carries the filter's name and reason."""
    kept, rejected, funnel = rows, [], {}
    for name in cfg.filter.order:
        if not enabled(cfg, name):
            continue
        t0 = time.perf_counter()
        reasons = FILTER_FUNCTIONS[name](kept, cfg)
        survivors = []
        for row, why in zip(kept, reasons, strict=True):
            if why is None:
                survivors.append(row)
            else:
                row.rejected_by, row.reason = name, why
                rejected.append(row)
        funnel[name] = {"in": len(kept), "out": len(survivors), "seconds": round(time.perf_counter() - t0, 3)}
        kept = survivors
    return kept, rejected, funnel


def teacher_accuracy(rows: list[FilteredTrace]) -> dict:
    """Per-trace accuracy, and per problem: first sample, majority vote, any sample (pass@n)."""
    labelled = [r for r in rows if r.verdict != "unlabeled"]
    if not labelled:
        return {"traces": None}
    groups: dict[str, list[FilteredTrace]] = defaultdict(list)
    for r in labelled:
        groups[r.id].append(r)
    first = sum(min(g, key=lambda r: r.sample).verdict == "correct" for g in groups.values())
    anyc = sum(any(r.verdict == "correct" for r in g) for g in groups.values())
    maj = 0
    for g in groups.values():
        top, votes = majority(r.answer_key for r in g)
        maj += votes > 0 and any(r.answer_key == top and r.verdict == "correct" for r in g)
    n = len(groups)
    return {
        "traces": round(sum(r.verdict == "correct" for r in labelled) / len(labelled), 4),
        "problems": n, "first_sample": round(first / n, 4), "majority_vote": round(maj / n, 4), "any_sample": round(anyc / n, 4),
    }


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


def filter_traces(cfg: Config, overwrite: bool = False) -> dict:
    """Parse, check and clean the traces of the selected train problems; returns the stage stats."""
    require_complete(cfg, "generate")
    with StageRun(cfg, "filter", overwrite) as run, gc_paused():
        stop = answer_stops(load_prompt(cfg.data.prompt), cfg.data)
        selected = {p.id for p in load_problems(cfg.data, cfg.data.train_split)}
        rows, outside = [], 0
        for t in iter_rows(cfg.stage_dir("generate") / "traces.jsonl", Trace):
            if t.id in selected:
                rows.append(check_trace(t, stop, cfg.data))
            else:  # generated for a larger data.max_train earlier: kept by generate, not part of this run
                outside += 1
        if outside:
            log.info("filter: %d traces belong to problems outside the current selection (data.max_train) and are not used", outside)
        accuracy = teacher_accuracy([r for r in rows if not r.rationalized])
        kept, rejected, funnel = run_filters(rows, cfg)
        assert len(kept) + len(rejected) == len(rows)
        write_rows(run.dir / "kept.jsonl", kept)
        write_rows(run.dir / "rejected.jsonl", rejected)
        stats = {
            "rows_in": len(rows),
            "traces_outside_selection": outside,
            "kept": len(kept),
            "rejected": len(rejected),
            "rejected_by": dict(Counter(r.rejected_by for r in rejected)),
            "funnel": funnel,
            "verdicts": dict(Counter(r.verdict for r in rows)),
            "teacher_accuracy": accuracy["traces"],
            "teacher_accuracy_detail": accuracy,
            "kept_problems": len({r.id for r in kept}),
            "kept_rationalized": sum(r.rationalized for r in kept),
            "cut_continuations": sum(r.cut is not None for r in rows),
            "with_thinking": sum(r.thinking is not None for r in rows),
        }
        log.info("filter kept %d of %d traces (teacher accuracy %s)", len(kept), len(rows), accuracy["traces"])
        return run.finish(stats, outputs=[run.dir / "kept.jsonl", run.dir / "rejected.jsonl"])
