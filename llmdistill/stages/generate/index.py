"""What a generate run has done, in memory that does not grow with the run: one byte a problem.

The traces file is the only copy of the traces. To resume, the stage streams the split and the
traces file once each, writing fixed-size records of 64-bit hashes (``llmdistill.buckets``: spilled
to disk by bucket), then joins them a bucket (1/64 of the ids) at a time. What it keeps (``Plan``):

- per problem, in the split's order, one byte of flags: a sample of ``0 .. n-1`` is not written
  (``MISSING``), a hinted sample ``n .. 2n-1`` is not (``HINT_MISSING``), the problem has a gold
  answer (``LABELLED``);
- the written samples of the problems asked again that already have some (``partial``: none in a
  run resumed after a kill but the batches in flight; every problem when ``generate.n`` is raised);
- the running totals the statistics need (``Totals``), the rows written with other settings (a
  count, and the first few, for the refusal).

A trace belongs to a selected problem when their id hashes match, and was written with these
settings when its teacher, template hash and sampling match and its question's hash is the
problem's. Two different ids share a 64-bit hash with probability about n**2 / 2**65 (1e-7 at 2M
problems): a trace would then be taken as another problem's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llmdistill.buckets import Buckets, h64
from llmdistill.records import Problem, Trace

MISSING, HINT_MISSING, LABELLED = 1, 2, 4
CHUNK = 1024  # rows hashed at a time (a chunk of traces holds their texts)

SPLIT = np.dtype([("h", np.uint64), ("q", np.uint64), ("pos", np.uint32), ("labelled", np.uint8)])
TRACE = np.dtype(
    [
        ("h", np.uint64),
        ("q", np.uint64),
        ("ordinal", np.uint64),  # the row's place in the file, for the refusal's example
        ("prompt_tokens", np.uint64),
        ("completion_tokens", np.uint64),
        ("sample", np.uint32),
        ("settings_match", np.uint8),
        ("rationalized", np.uint8),
        ("finish", np.uint8),  # index into Plan.finish_names
    ]
)
SOLVED = np.dtype([("h", np.uint64)])


@dataclass
class Totals:
    """The statistics over every trace of the selected problems, counted as rows stream by."""

    traces: int = 0
    rationalized: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reasons: Counter = field(default_factory=Counter)

    def add(self, rows: Iterable[Trace]) -> None:
        for r in rows:
            self.traces += 1
            self.rationalized += r.rationalized
            self.prompt_tokens += r.prompt_tokens
            self.completion_tokens += r.completion_tokens
            self.finish_reasons[r.finish_reason] += 1


@dataclass
class Plan:
    """What is written and what is left to ask, per problem of the split (in its order)."""

    flags: np.ndarray  # uint8 per problem: MISSING | HINT_MISSING | LABELLED
    totals: Totals
    partial: dict[int, set[int]] = field(default_factory=dict)  # id hash -> samples written, for problems asked again
    mismatched: int = 0
    bad: list[tuple[int, bool]] = field(default_factory=list)  # (ordinal, question changed) of the first rows that do not fit
    rows: int = 0  # every row in the file (selected or not)

    def has(self, pid: str, sample: int) -> bool:
        """Whether ``(pid, sample)`` was written before this run (asked of the problems asked again)."""
        return sample in self.partial.get(h64(pid), ())

    def count(self, flag: int) -> int:
        return int(np.count_nonzero(self.flags & flag))


class SplitIndex:
    """The split's problems as records (id hash, question hash, position, labelled), by bucket."""

    def __init__(self, problems: Iterable[Problem], parent: Path | None = None):
        self.records = Buckets(SPLIT, parent=parent)
        self.n = 0
        for chunk in _chunks(problems):
            recs = np.zeros(len(chunk), dtype=SPLIT)
            recs["h"] = [h64(p.id) for p in chunk]
            recs["q"] = [h64(p.question) for p in chunk]
            recs["pos"] = np.arange(self.n, self.n + len(chunk))
            recs["labelled"] = [p.answer is not None for p in chunk]
            self.records.add(recs)
            self.n += len(chunk)

    def __len__(self) -> int:
        return self.n

    def close(self) -> None:
        self.records.close()


def plan(rows: Iterator[Trace], split: SplitIndex, want: dict, n: int, hints: bool, parent: Path | None = None) -> Plan:
    """Stream the rows of a traces file once and join them with the split, a bucket at a time:
    the flags, the totals, and the rows written with other settings or for a question that
    changed (``want``: teacher, template_hash, sampling)."""
    finish: dict[str, int] = {}
    with Buckets(TRACE, parent=parent) as traces:
        total_rows = 0
        for chunk in _chunks(rows):
            recs = np.zeros(len(chunk), dtype=TRACE)
            recs["h"] = [h64(r.id) for r in chunk]
            recs["q"] = [h64(r.question) for r in chunk]
            recs["ordinal"] = np.arange(total_rows, total_rows + len(chunk))
            recs["prompt_tokens"] = [r.prompt_tokens for r in chunk]
            recs["completion_tokens"] = [r.completion_tokens for r in chunk]
            recs["sample"] = [r.sample for r in chunk]
            recs["settings_match"] = [
                r.teacher == want["teacher"] and r.template_hash == want["template_hash"] and r.sampling == want["sampling"] for r in chunk
            ]
            recs["rationalized"] = [r.rationalized for r in chunk]
            recs["finish"] = [finish.setdefault(r.finish_reason, len(finish)) for r in chunk]
            traces.add(recs)
            total_rows += len(chunk)
        out = Plan(np.zeros(len(split), dtype=np.uint8), Totals(), rows=total_rows)
        names = list(finish)
        finishes = np.zeros(max(1, len(names)), dtype=np.int64)
        for s, t in zip(split.records.buckets(), traces.buckets(), strict=True):
            _join(s, t, n, hints, out, finishes)
        out.totals.finish_reasons = Counter({names[i]: int(c) for i, c in enumerate(finishes) if c})
    return out


def _join(s: np.ndarray, t: np.ndarray, n: int, hints: bool, out: Plan, finishes: np.ndarray) -> None:
    """One bucket: the split's records ``s`` and the traces' records ``t`` of the same ids."""
    out.flags[s["pos"]] |= np.where(s["labelled"] > 0, LABELLED, 0).astype(np.uint8)
    if not len(s):
        return
    order = np.argsort(s["h"], kind="stable")
    sh = s["h"][order]
    at = order[np.searchsorted(sh, t["h"]).clip(max=len(sh) - 1)]  # the problem each trace would belong to
    selected = s["h"][at] == t["h"]
    fits = (t["settings_match"] > 0) & (s["q"][at] == t["q"])
    wrong = selected & ~fits
    if wrong.any():
        out.mismatched += int(wrong.sum())
        q_changed = s["q"][at] != t["q"]
        first = np.argsort(t["ordinal"][wrong])[:3]
        out.bad = sorted(out.bad + [(int(o), bool(c)) for o, c in zip(t["ordinal"][wrong][first], q_changed[wrong][first], strict=True)])[
            :3
        ]
    good = selected & fits
    g, rows = t[good], at[good]
    out.totals.traces += len(g)
    out.totals.rationalized += int(g["rationalized"].sum())
    out.totals.prompt_tokens += int(g["prompt_tokens"].sum())
    out.totals.completion_tokens += int(g["completion_tokens"].sum())
    np.add.at(finishes, g["finish"].astype(np.intp), 1)
    written = np.zeros(len(s), dtype=bool)
    for flag, lo, hi in ((MISSING, 0, n), (HINT_MISSING, n, 2 * n))[: 2 if hints else 1]:
        inside = (g["sample"] >= lo) & (g["sample"] < hi)
        pairs = np.unique(rows[inside].astype(np.uint64) << np.uint64(32) | g["sample"][inside].astype(np.uint64))
        have = np.bincount((pairs >> np.uint64(32)).astype(np.intp), minlength=len(s))
        short = have < n
        out.flags[s["pos"][short]] |= flag
        written |= short & (have > 0)
    for i in np.flatnonzero(written):  # problems asked again that already have samples: which
        out.partial[int(s["h"][i])] = set(g["sample"][rows == i].tolist())


def explain(plan_: Plan, rows: Iterator[Trace], want: dict) -> list[str]:
    """The first rows that do not fit, in words, for the refusal (the file is read again, up to
    the last of them)."""
    wanted = dict(plan_.bad)
    out: list[str] = []
    for i, r in enumerate(rows):
        if i in wanted:
            diff = [
                f"{k}: {v!r} -> {want[k]!r}"
                for k, v in (("teacher", r.teacher), ("template_hash", r.template_hash), ("sampling", r.sampling))
                if v != want[k]
            ]
            if wanted[i]:
                diff.append(f"the question of {r.id} changed")
            out.append(f"trace {r.id}#{r.sample}: {'; '.join(diff)}")
            if len(out) == len(wanted):
                break
    return out


def solved(rows: Iterator[Trace], is_solved: Callable[[Trace], bool], split: SplitIndex, plan_: Plan, parent: Path | None = None) -> None:
    """Mark ``HINT_MISSING`` only on labelled problems none of whose rows ``is_solved`` (the problems
    to rationalize): a second streaming pass over the traces file, joined by bucket."""
    with Buckets(SOLVED, parent=parent) as hits:
        for chunk in _chunks(rows):
            ids = [h64(r.id) for r in chunk if is_solved(r)]
            if ids:
                hits.add(np.array(ids, dtype=np.uint64).view(SOLVED))
        for s, h in zip(split.records.buckets(), hits.buckets(), strict=True):
            done = np.isin(s["h"], h["h"]) | (s["labelled"] == 0)
            plan_.flags[s["pos"][done]] &= np.uint8(0xFF ^ HINT_MISSING)


def empty(split: SplitIndex, n: int, hints: bool) -> Plan:
    """Nothing written: every problem wants everything."""
    return plan(iter(()), split, {}, n, hints)


def _chunks(rows: Iterable) -> Iterator[list]:
    chunk: list = []
    for r in rows:
        chunk.append(r)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
