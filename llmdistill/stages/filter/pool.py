"""Worker processes for the filter stage. The text-heavy filters' per-row work (``features``:
degenerate n-gram counts, exact-dedup keys, MinHashes, decontamination n-grams) is a pure
function of a row's texts, so a chunk's features are computed in a worker while the main process
reads and checks the next chunk; the main process keeps every filter's state and writes in
order, so the output is the one a single process writes."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from llmdistill.config import Config
from llmdistill.errors import UserError
from llmdistill.stages.filter.rules import row_texts

log = logging.getLogger(__name__)

MIN_BYTES = 32 << 20  # traces files smaller than this are filtered in one process (a worker's start-up costs ~2 s)
_FILTERS: dict = {}  # in a worker: the filters whose features it computes


def _start(cfg: Config, names: list[str]) -> None:
    from llmdistill.stages.filter.rules import make_filter

    _FILTERS.update({n: make_filter(n, cfg) for n in names})


def _features(texts: list[tuple], names: list[str]) -> tuple[dict, float]:
    t0 = time.process_time()
    return {n: _FILTERS[n].features(texts) for n in names}, time.process_time() - t0


def workers_for(cfg: Config, traces: Path) -> int:
    """``filter.workers``, or by default one fewer than the CPUs (at most 4) for a traces file of
    ``MIN_BYTES`` or more, and none (one process) for a smaller one."""
    if cfg.filter.workers is not None:
        return cfg.filter.workers
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # the CPUs this process may use
    return min(4, cpus - 1) if traces.stat().st_size >= MIN_BYTES else 0


class FeaturePool:
    """``submit(rows, names)`` a chunk's features to a worker; ``result(future)`` waits for them."""

    def __init__(self, cfg: Config, names: list[str], workers: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn: the stage may run in a process with threads (a progress bar, a vLLM engine)
        self.pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start, initargs=(cfg, names))
        self.workers, self.seconds = workers, 0.0
        log.info("filter: %d worker processes compute %s", workers, ", ".join(names))

    def submit(self, rows: list, names: list[str]):
        return self.pool.submit(_features, row_texts(rows), names)

    def result(self, future) -> dict:
        from concurrent.futures.process import BrokenProcessPool

        try:
            features, seconds = future.result()
        except BrokenProcessPool:
            raise UserError(
                "a filter worker process died or could not start. Workers start with spawn: a script that calls the "
                'filter stage needs its calls under `if __name__ == "__main__":`; or set filter.workers: 0 '
                "(one process)"
            ) from None
        self.seconds += seconds
        return features

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)
