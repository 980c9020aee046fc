"""The ``filter`` section: which filters run, in which order, each with its own settings."""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from llmdistill.config.base import Section, content, operational


class Toggle(Section):
    enabled: bool = content(True)


class VoteConfig(Section):
    enabled: bool = content(False)
    min_agreement: float = content(0.0, ge=0, le=1)  # drop problems whose majority share is lower


class LengthConfig(Section):
    enabled: bool = content(True)
    min_words: int = content(1, ge=0)  # rationale length bounds, in words
    max_words: int = content(2048, ge=1)


class DegenerateConfig(Section):
    enabled: bool = content(True)
    ngram: int = content(4, ge=1)
    max_repeated_ngram_fraction: float = content(0.5, gt=0, le=1)  # share of word n-grams that repeat
    max_line_repeats: int = content(3, ge=1)  # the same non-empty line this many times


class NearDedupConfig(Section):
    enabled: bool = content(True)
    threshold: float = content(0.8, gt=0, le=1)  # estimated Jaccard similarity of word shingles
    shingle: int = content(5, ge=1)  # words per shingle
    num_perm: int = content(128, ge=16)
    seed: int = content(0)


class DecontaminateConfig(Section):
    enabled: bool = content(True)
    ngram: int = content(8, ge=1)  # words
    eval_sets: list[str] = content([])  # files (JSON/JSONL/CSV/Parquet) whose question_field texts must not leak
    include_test_split: bool = content(True)  # the run's own test split is always an evaluation set


class SelectConfig(Section):
    enabled: bool = content(False)
    max_per_problem: int = content(1, ge=1)
    strategy: Literal["shortest", "distinct", "first"] = content("shortest")


FILTERS = ["truncated", "parse", "correct", "vote", "length", "degenerate", "dedup_exact", "dedup_near", "decontaminate", "select"]


class FilterConfig(Section):
    """Each filter has its own section; ``order`` says which run, in which order."""

    order: list[Literal[tuple(FILTERS)]] = content(FILTERS)
    truncated: Toggle = Toggle()
    correct: Toggle = Toggle()  # labelled data: keep traces whose answer matches the gold answer
    vote: VoteConfig = VoteConfig()
    length: LengthConfig = LengthConfig()
    degenerate: DegenerateConfig = DegenerateConfig()
    dedup_exact: Toggle = Toggle()
    dedup_near: NearDedupConfig = NearDedupConfig()
    decontaminate: DecontaminateConfig = DecontaminateConfig()
    select: SelectConfig = SelectConfig()
    keep_rationalized: bool = content(True)  # keep correct traces that were written with the gold answer as a hint
    # Worker processes for the text-heavy filters' per-row work (degenerate, dedup_exact, dedup_near,
    # decontaminate); the output is the same with any number. None: one fewer than the CPUs (at most
    # 4) for a traces file of 32 MiB or more, else 0 (all in one process).
    workers: int | None = operational(None, ge=0)

    @field_validator("order")
    @classmethod
    def _order(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"filter.order lists a filter twice: {v}")
        if "parse" not in v:
            raise ValueError("filter.order must include 'parse': every later filter needs a parsed answer")
        return v
