"""What a generate run has done, in memory that does not grow with the texts: 8-byte hashes.

The traces file is the only copy of the traces. To resume, the stage streams it once and keeps:

- the ``(id, sample)`` keys written (``Done.keys``: one 64-bit hash each, sorted in a numpy array);
- the running totals its statistics need (``Totals``);
- the rows whose provenance differs from the current settings (the first few, for the refusal).

The selection (the split's problems) is held the same way (``Selection``): a hash of each id and
of its question, so a trace's provenance check needs no problem text in memory. A key's hash is
the id's hash plus the sample times an odd constant (mod 2**64), so the keys of every problem are
computed from the id hashes at once. Two different keys share a hash with probability about
n**2 / 2**65 (1e-7 at 2M traces): then one trace would be taken as written and not asked for.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llmdistill.records import Problem, Trace

MIX = np.uint64(0x9E3779B97F4A7C15)  # odd: sample -> a distinct offset for every sample number


def h64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def key_hash(pid: str, sample: int) -> int:
    return (h64(pid) + sample * int(MIX)) % 2**64


def _sorted(values: array) -> np.ndarray:
    return np.unique(np.frombuffer(values, dtype=np.uint64)) if len(values) else np.zeros(0, dtype=np.uint64)


def _member(sorted_values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """For each query hash, whether it is in ``sorted_values``."""
    if not len(sorted_values):
        return np.zeros(len(queries), dtype=bool)
    at = np.searchsorted(sorted_values, queries).clip(max=len(sorted_values) - 1)
    return sorted_values[at] == queries


class Selection:
    """The split's problems as hashes: each id's, and its question's (aligned, sorted by id hash)."""

    def __init__(self, problems: Iterable[Problem]):
        ids, questions = array("Q"), array("Q")
        for p in problems:
            ids.append(h64(p.id))
            questions.append(h64(p.question))
        id_arr, q_arr = np.frombuffer(ids, dtype=np.uint64), np.frombuffer(questions, dtype=np.uint64)
        order = np.argsort(id_arr, kind="stable")
        self.ids, self.questions = id_arr[order], q_arr[order]

    def __len__(self) -> int:
        return len(self.ids)

    def question_of(self, pid: str) -> int | None:
        """The hash of the problem's question, or None when ``pid`` is not selected."""
        h = np.uint64(h64(pid))
        i = int(np.searchsorted(self.ids, h))
        return int(self.questions[i]) if i < len(self.ids) and self.ids[i] == h else None

    def keys(self, sample: int) -> np.ndarray:
        """Every selected problem's key hash for ``sample``."""
        with np.errstate(over="ignore"):
            return self.ids + np.uint64(sample) * MIX


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
class Done:
    """What the traces file holds: the written keys, the totals, the rows that do not fit."""

    keys: np.ndarray
    totals: Totals
    mismatched: int = 0
    reasons: list[str] = field(default_factory=list)  # the first few mismatches, for the refusal
    rows: int = 0  # every row in the file (selected or not)

    def has(self, pid: str, sample: int) -> bool:
        return bool(_member(self.keys, np.array([key_hash(pid, sample)], dtype=np.uint64))[0])

    def missing(self, selection: Selection, samples: range) -> np.ndarray:
        """Per selected problem (in ``selection``'s order), whether any of ``samples`` is not written."""
        out = np.zeros(len(selection), dtype=bool)
        for s in samples:
            out |= ~_member(self.keys, selection.keys(s))
        return out


def scan(rows: Iterator[Trace], selection: Selection, want: dict, chunk: int = 1024) -> Done:
    """Stream the rows of a traces file once: keys, totals, and the rows written with other
    settings or for a question that changed (``want``: teacher, template_hash, sampling). Rows are
    looked up in the selection a chunk at a time (one numpy search per chunk, not per row)."""
    keys = array("Q")
    done = Done(np.zeros(0, dtype=np.uint64), Totals())
    batch: list[Trace] = []
    for r in rows:
        batch.append(r)
        if len(batch) == chunk:
            _scan_chunk(batch, selection, want, keys, done)
            batch = []
    if batch:
        _scan_chunk(batch, selection, want, keys, done)
    done.keys = _sorted(keys)
    return done


def _scan_chunk(batch: list[Trace], selection: Selection, want: dict, keys: array, done: Done) -> None:
    done.rows += len(batch)
    ids = np.fromiter((h64(r.id) for r in batch), dtype=np.uint64, count=len(batch))
    if len(selection):
        at = np.searchsorted(selection.ids, ids).clip(max=len(selection) - 1)
        chosen, question = selection.ids[at] == ids, selection.questions[at]
    else:
        chosen = np.zeros(len(batch), dtype=bool)
        question = np.zeros(len(batch), dtype=np.uint64)
    good = []
    for i in np.flatnonzero(chosen):
        r = batch[i]
        diff = [
            f"{k}: {v!r} -> {want[k]!r}"
            for k, v in (("teacher", r.teacher), ("template_hash", r.template_hash), ("sampling", r.sampling))
            if v != want[k]
        ]
        if int(question[i]) != h64(r.question):
            diff.append(f"the question of {r.id} changed")
        if diff:
            done.mismatched += 1
            if len(done.reasons) < 3:
                done.reasons.append(f"trace {r.id}#{r.sample}: {'; '.join(diff)}")
            continue
        good.append(i)
    if good:
        idx = np.array(good)
        samples = np.fromiter((batch[i].sample for i in good), dtype=np.uint64, count=len(good))
        with np.errstate(over="ignore"):
            keys.extend((ids[idx] + samples * MIX).tolist())
        done.totals.add(batch[i] for i in good)


def empty() -> Done:
    return Done(np.zeros(0, dtype=np.uint64), Totals())


def solved_ids(rows: Iterator[Trace], solved) -> np.ndarray:
    """The id hashes of the problems with a row for which ``solved(row)`` holds, sorted."""
    ids = array("Q")
    for r in rows:
        if solved(r):
            ids.append(h64(r.id))
    return _sorted(ids)


def in_sorted(sorted_values: np.ndarray, pid: str) -> bool:
    return bool(_member(sorted_values, np.array([h64(pid)], dtype=np.uint64))[0])


def lines_in(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
