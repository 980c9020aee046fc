"""The ``filter`` section: which filters run, in which order, each with its own settings."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator, model_validator

from llmdistill.config.base import Section, content, operational


class VoteConfig(Section):
    min_agreement: float = content(0.0, ge=0, le=1)  # drop problems whose majority share is lower


class LengthConfig(Section):
    min_words: int = content(1, ge=0)  # rationale length bounds, in words
    max_words: int = content(2048, ge=1)


class DegenerateConfig(Section):
    ngram: int = content(4, ge=1)
    max_repeated_ngram_fraction: float = content(0.5, gt=0, le=1)  # share of word n-grams that repeat
    max_line_repeats: int = content(3, ge=1)  # the same non-empty line this many times


class NearDedupConfig(Section):
    threshold: float = content(0.8, gt=0, le=1)  # estimated Jaccard similarity of word shingles
    shingle: int = content(5, ge=1)  # words per shingle
    num_perm: int = content(128, ge=16)
    seed: int = content(0)


class DecontaminateConfig(Section):
    ngram: int = content(8, ge=1)  # words
    eval_sets: list[str] = content([])  # files (JSON/JSONL/CSV/Parquet) whose question_field texts must not leak
    include_test_split: bool = content(True)  # the run's own test split is always an evaluation set


class SelectConfig(Section):
    max_per_problem: int = content(1, ge=1)
    strategy: Literal["shortest", "distinct", "first"] = content("shortest")


FILTERS = ["truncated", "parse", "correct", "vote", "length", "degenerate", "dedup_exact", "dedup_near", "decontaminate", "select"]
DEFAULT_ORDER = [f for f in FILTERS if f not in ("vote", "select")]  # vote and select run when listed
SETTINGS = ("vote", "length", "degenerate", "dedup_near", "decontaminate", "select")  # the filters with settings of their own


class FilterConfig(Section):
    """``order`` is the one switch: the filters that run, in that order. A filter with settings has
    a section of its own, read only when ``order`` lists the filter."""

    # the built-in FILTERS, and a plugin's filters: names registered under the "llmdistill.filters"
    # entry point, or "module:function" paths
    order: list[str] = content(DEFAULT_ORDER)
    vote: VoteConfig = VoteConfig()
    length: LengthConfig = LengthConfig()
    degenerate: DegenerateConfig = DegenerateConfig()
    dedup_near: NearDedupConfig = NearDedupConfig()
    decontaminate: DecontaminateConfig = DecontaminateConfig()
    select: SelectConfig = SelectConfig()
    keep_rationalized: bool = content(True)  # keep correct traces that were written with the gold answer as a hint
    # Worker processes for the text-heavy filters' per-row work (degenerate, dedup_exact, dedup_near,
    # decontaminate); the output is the same with any number. None: one fewer than the CPUs (at most
    # 4) for a traces file of 32 MiB or more, else 0 (all in one process).
    workers: int | None = operational(None, ge=0)
    # a plugin filter's settings, by its name in ``order``: {name: {...}}, passed to it as ``options``
    options: dict[str, dict[str, Any]] = content({})

    @model_validator(mode="before")
    @classmethod
    def _no_enabled(cls, raw):
        """The switch that was removed, refused with what replaced it (rather than 'unknown key')."""
        if isinstance(raw, dict):
            for name, section in raw.items():
                if name in ("truncated", "correct", "dedup_exact") or (isinstance(section, dict) and "enabled" in section):
                    raise ValueError(
                        f"filter.{name}{'.enabled' if isinstance(section, dict) and 'enabled' in section else ''} was removed: "
                        f"a filter runs when filter.order lists it (default: {DEFAULT_ORDER}; vote and select run when listed)"
                    )
        return raw

    @staticmethod
    def upgrade_saved(raw: dict) -> dict:
        """A ``filter`` section saved by a version with per-filter ``enabled`` switches, as this one
        writes it: the order keeps the filters that were enabled (vote and select were off unless
        switched on), and the settings of a filter that did not run (never read) are dropped."""
        if not any(isinstance(v, dict) and "enabled" in v for v in raw.values()) and not {"truncated", "correct", "dedup_exact"} & set(raw):
            return raw
        off_by_default = {"vote", "select"}
        on = {n for n in FILTERS if (raw.get(n) or {}).get("enabled", n not in off_by_default)}
        out = {k: v for k, v in raw.items() if k not in ("truncated", "correct", "dedup_exact") and k not in SETTINGS}
        out["order"] = [n for n in raw.get("order", FILTERS) if n in on or n == "parse"]
        for name in SETTINGS:
            if name in raw and name in out["order"]:
                out[name] = {k: v for k, v in raw[name].items() if k != "enabled"}
        if "correct" not in out["order"]:
            out.pop("keep_rationalized", None)
        if not set(out["order"]) & {"degenerate", "dedup_exact", "dedup_near", "decontaminate"}:
            out.pop("workers", None)
        return out

    @model_validator(mode="after")
    def _settings_of_filters_that_run(self):
        for name in SETTINGS:
            if name not in self.order:
                getattr(self, name).refuse_unread(
                    f"filter.{name}", set(), f"because filter.order does not list {name!r} (list it there to run the filter)"
                )
        unread = set()
        if "correct" not in self.order:
            unread.add("keep_rationalized")
        if not set(self.order) & {"degenerate", "dedup_exact", "dedup_near", "decontaminate"}:
            unread.add("workers")
        plugins = [n for n in self.order if n not in FILTERS]
        stray = sorted(set(self.options) - set(plugins))
        if stray:
            raise ValueError(
                f"filter.options.{stray[0]} is not read: filter.options holds the settings of the plugin filters in filter.order ({plugins or 'none'})"
            )
        self.refuse_unread("filter", set(type(self).model_fields) - unread, f"with filter.order {self.order}")
        return self

    @field_validator("order")
    @classmethod
    def _order(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"filter.order lists a filter twice: {v}")
        if "parse" not in v:
            raise ValueError("filter.order must include 'parse': every later filter needs a parsed answer")
        from llmdistill.plugins import require_known

        for name in v:
            require_known(
                "filter", name, FILTERS, "filter.order: unknown filter", "module:function",
                lambda f, name=name: None if callable(f) else f"filter {name!r} is not a function judge(rows, options)",
            )  # fmt: skip
        return v
