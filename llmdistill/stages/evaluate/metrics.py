"""Statistics for comparing models on the same problems: bootstrap confidence intervals, paired
2x2 agreement tables with McNemar's exact test, gap closed, and pass@k.

A model's answer to a problem counts as correct or not; unparseable answers are not correct
(and are counted on their own in the report).
"""

from __future__ import annotations

from math import comb

import numpy as np


def bootstrap_ci(correct: list[bool], n_boot: int = 10000, level: float = 0.95, seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the accuracy, resampling problems with replacement."""
    n = len(correct)
    if n == 0:
        return None
    x = np.asarray(correct, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, 1000):  # chunks keep memory at 1000 x n
        idx = rng.integers(0, n, size=(min(1000, n_boot - start), n))
        means[start : start + len(idx)] = x[idx].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(lo), float(hi)


def agreement(a: list[bool], b: list[bool]) -> dict:
    """The paired 2x2 table of two models on the same problems."""
    if len(a) != len(b):
        raise ValueError(f"paired results differ in length: {len(a)} vs {len(b)}")
    both = sum(x and y for x, y in zip(a, b))
    only_a = sum(x and not y for x, y in zip(a, b))
    only_b = sum(y and not x for x, y in zip(a, b))
    return {"both": both, "only_a": only_a, "only_b": only_b, "neither": len(a) - both - only_a - only_b}


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test of the discordant pairs at 1/2."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def gap_closed(after: float | None, before: float | None, teacher: float | None) -> float | None:
    """(student after - student before) / (teacher - student before); None when undefined."""
    if after is None or before is None or teacher is None or teacher == before:
        return None
    return (after - before) / (teacher - before)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al., 2021)."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)
