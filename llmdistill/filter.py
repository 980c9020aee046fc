"""Stage 2, filter: parse each trace into rationale and answer, check it, keep the clean ones.

Filters run in order; the first one that rejects a row names itself and its reason in
``rejected.jsonl``. Rows in = rows kept + rows rejected, and ``stats.json`` has the funnel.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Callable

from llmdistill.answers import check_numeric, parse_completion
from llmdistill.config import Config
from llmdistill.jsonl import iter_rows, write_rows
from llmdistill.prompts import load_prompt
from llmdistill.records import FilteredTrace, Trace
from llmdistill.stage import StageRun, require_complete

log = logging.getLogger(__name__)

# A filter returns a reason to reject the row, or None to keep it.
Filter = Callable[[FilteredTrace], "str | None"]


def _truncated(row: FilteredTrace) -> str | None:
    return "generation hit max_new_tokens (finish_reason=length)" if row.finish_reason == "length" else None


def _parse(row: FilteredTrace) -> str | None:
    return row.reason if row.verdict == "unparseable" else None


def _correct(row: FilteredTrace) -> str | None:
    return f"wrong answer: {row.reason}" if row.verdict == "wrong" else None


def build_filters(cfg: Config) -> list[tuple[str, Filter]]:
    filters: list[tuple[str, Filter]] = []
    if cfg.filter.drop_truncated:
        filters.append(("truncated", _truncated))
    filters.append(("parse", _parse))
    if cfg.filter.require_correct:
        filters.append(("correct", _correct))
    return filters


def check_trace(trace: Trace, stop: list[str], tolerance: float) -> FilteredTrace:
    """Parse and check one trace; the verdict's reason is kept for the rejected file."""
    parsed = parse_completion(trace.completion, stop)
    verdict, reason = ("unparseable", parsed.reason) if parsed.answer is None else check_numeric(parsed.answer, trace.answer, tolerance)
    return FilteredTrace(**trace.model_dump(), rationale=parsed.rationale, pred=parsed.answer, verdict=verdict, reason=reason)


def filter_traces(cfg: Config) -> dict:
    require_complete(cfg, "generate")
    with StageRun(cfg, "filter") as run:
        stop = load_prompt(cfg.data.prompt).stop
        filters = build_filters(cfg)
        kept, rejected = [], []
        funnel = {name: {"in": 0, "out": 0} for name, _ in filters}
        verdicts: Counter = Counter()
        for trace in iter_rows(cfg.stage_dir("generate") / "traces.jsonl", Trace):
            row = check_trace(trace, stop, cfg.data.tolerance)
            verdicts[row.verdict] += 1
            for name, fn in filters:
                funnel[name]["in"] += 1
                why = fn(row)
                if why is not None:
                    rejected.append(row.model_copy(update={"rejected_by": name, "reason": why}))
                    break
                funnel[name]["out"] += 1
            else:
                kept.append(row)
        write_rows(run.dir / "kept.jsonl", kept)
        write_rows(run.dir / "rejected.jsonl", rejected)
        total = len(kept) + len(rejected)
        labelled = total - verdicts["unlabeled"]
        stats = {
            "rows_in": total,
            "kept": len(kept),
            "rejected": len(rejected),
            "rejected_by": dict(Counter(r.rejected_by for r in rejected)),
            "funnel": funnel,
            "verdicts": dict(verdicts),
            "teacher_accuracy": round(verdicts["correct"] / labelled, 4) if labelled else None,
        }
        log.info("filter kept %d of %d traces (teacher accuracy %s)", len(kept), total, stats["teacher_accuracy"])
        return run.finish(stats)
