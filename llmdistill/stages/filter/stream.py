"""How rows stream through the filter stage: chunks, passes (a group filter starts one), and
the worker processes' features joined back in order."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Iterator

from llmdistill.records import FilteredTrace
from llmdistill.stages.filter.pool import FeaturePool
from llmdistill.stages.filter.rules import FEATURE_FILTERS, GROUP_FILTERS

CHUNK = 4096  # rows handed to each filter at a time


def judge(rows: list[FilteredTrace], reasons: list[str | None], name: str) -> tuple[list[FilteredTrace], list[FilteredTrace]]:
    """(the rows a filter keeps, the others), each of the others marked with the filter's name and its reason."""
    survivors, dropped = [], []
    for row, why in zip(rows, reasons, strict=True):
        if why is None:
            survivors.append(row)
        else:
            row.rejected_by, row.reason = name, why
            dropped.append(row)
    return survivors, dropped


def chunks(rows: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def filter_passes(names: list[str]) -> list[list[str]]:
    """The filters of each pass over the rows: a group filter starts a pass, since it judges a row
    only once the previous pass has shown it every row of the row's problem."""
    passes: list[list[str]] = [[]]
    for name in names:
        if name in GROUP_FILTERS:
            passes.append([])
        passes[-1].append(name)
    return passes


class Pass:
    """One pass of the filters over the rows, a chunk at a time. A chunk first goes through the
    pass's leading filters (the cheap ones, before the first text-heavy filter); the text-heavy
    filters' features of the rows left are computed by a worker (``FeaturePool``) while the next
    chunk is read, and the rest of the filters then judge the chunk in order."""

    def __init__(self, names: list[str], filters: dict, funnel: dict, rejected: dict, pool: FeaturePool | None):
        cut = next((i for i, n in enumerate(names) if n in FEATURE_FILTERS), len(names))
        self.head, self.tail = names[:cut], names[cut:]
        self.wanted = [n for n in self.tail if n in FEATURE_FILTERS]
        self.filters, self.funnel, self.rejected = filters, funnel, rejected
        self.pool = pool if self.wanted else None

    def run(self, source: Iterable[FilteredTrace]) -> Iterator[list[FilteredTrace]]:
        """The chunks of rows the pass keeps, in order."""
        pending: deque = deque()
        for chunk in chunks(source, CHUNK):
            rows = self._apply(chunk, self.head)
            pending.append((rows, self.pool.submit(rows, self.wanted) if self.pool and rows else None))
            if len(pending) > (self.pool.workers if self.pool else 0):
                yield self._finish(*pending.popleft())
        while pending:
            yield self._finish(*pending.popleft())

    def _finish(self, rows: list[FilteredTrace], future) -> list[FilteredTrace]:
        features = None
        if future is not None:
            assert self.pool is not None  # a future comes from the pool
            features = self.pool.result(future)
        return self._apply(rows, self.tail, features, {id(r): i for i, r in enumerate(rows)} if features else None)

    def _apply(
        self, rows: list[FilteredTrace], names: list[str], features: dict | None = None, pos: dict | None = None
    ) -> list[FilteredTrace]:
        n0 = len(rows)
        for name in names:
            t0 = time.perf_counter()
            if features and name in features:  # the worker's features of the rows that reached this filter
                f = features[name]
                if len(rows) != n0:
                    assert pos is not None  # given with the features
                    idx = [pos[id(r)] for r in rows]
                    f = f[idx] if hasattr(f, "shape") else [f[i] for i in idx]
                rows, dropped = judge(rows, self.filters[name](rows, f), name)
            else:
                rows, dropped = judge(rows, self.filters[name](rows), name)
            self.rejected[name].write(dropped)
            self.funnel[name]["in"] += len(rows) + len(dropped)
            self.funnel[name]["out"] += len(rows)
            self.funnel[name]["seconds"] += time.perf_counter() - t0
        return rows
