"""The rules of the filter stage (``filter.order``): small functions in a registry, each with its config section.

A filter sees the rows still kept and returns, for each, a reason to reject it or None to keep
it. Filters that look at groups (vote, dedup, select) see every kept row at once.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from typing import Callable

from llmdistill.config import Config
from llmdistill.dedup import build_ngram_index, exact_key, near_duplicates, normalize, shared_ngram
from llmdistill.records import FilteredTrace
from llmdistill.tasks import majority

log = logging.getLogger(__name__)
Reasons = list["str | None"]


def truncated(rows: list[FilteredTrace], cfg: Config) -> Reasons:
    return ["generation hit max_new_tokens (finish_reason=length)" if r.finish_reason == "length"
            else "the thinking never closed (<think> without </think>)" if r.truncated else None for r in rows]


def parse(rows: list[FilteredTrace], cfg: Config) -> Reasons:
    return [r.reason if r.verdict == "unparseable" else None for r in rows]


def correct(rows: list[FilteredTrace], cfg: Config) -> Reasons:
    keep_hinted = cfg.filter.keep_rationalized
    return [
        f"wrong answer: {r.reason}" if r.verdict == "wrong"
        else "rationalized trace (filter.keep_rationalized is false)" if r.rationalized and not keep_hinted
        else None
        for r in rows
    ]


def vote(rows: list[FilteredTrace], cfg: Config) -> Reasons:
    """Majority answer per problem; keep samples agreeing with gold (labelled) or the majority."""
    groups: dict[str, list[FilteredTrace]] = defaultdict(list)
    for r in rows:
        groups[r.id].append(r)
    for group in groups.values():
        top, votes = majority(r.answer_key for r in group)
        for r in group:
            r.majority, r.agreement = top, round(votes / len(group), 4)
    out: Reasons = []
    for r in rows:
        if r.agreement < cfg.filter.vote.min_agreement:
            out.append(f"majority answer {r.majority!r} has agreement {r.agreement} < {cfg.filter.vote.min_agreement}")
        elif r.verdict == "unlabeled" and r.answer_key != r.majority:
            out.append(f"answer {r.answer_key!r} disagrees with the majority {r.majority!r}")
        elif r.verdict == "wrong":
            out.append(f"answer {r.answer_key!r} disagrees with gold (majority {r.majority!r})")
        else:
            out.append(None)
    return out


def length(rows: list[FilteredTrace], cfg: Config) -> Reasons:
    lo, hi = cfg.filter.length.min_words, cfg.filter.length.max_words
    out: Reasons = []
    for r in rows:
        n = len((r.rationale or "").split())
        out.append(f"rationale has {n} words, outside [{lo}, {hi}]" if not lo <= n <= hi else None)
    return out


def degenerate(rows: list[FilteredTrace], cfg: Config) -> Reasons:
    c = cfg.filter.degenerate
    out: Reasons = []
    for r in rows:
        text = r.rationale or ""
        lines = Counter(line.strip() for line in text.splitlines() if line.strip())
        line, repeats = lines.most_common(1)[0] if lines else ("", 0)
        words = normalize(text).split()
        grams = [tuple(words[i : i + c.ngram]) for i in range(len(words) - c.ngram + 1)]
        repeated = 1 - len(set(grams)) / len(grams) if grams else 0.0
        if repeats >= c.max_line_repeats:
            out.append(f"line repeated {repeats} times: {line[:60]!r}")
        elif repeated > c.max_repeated_ngram_fraction:
            out.append(f"{repeated:.0%} of its {c.ngram}-grams repeat")
        else:
            out.append(None)
    return out


def dedup_exact(rows: list[FilteredTrace], cfg: Config) -> Reasons:
    seen: dict[str, FilteredTrace] = {}
    out: Reasons = []
    for r in rows:
        key = exact_key(f"{r.question}\n{r.rationale}\n{r.answer_key}")
        first = seen.setdefault(key, r)
        out.append(None if first is r else f"exact duplicate of {first.id} sample {first.sample}")
    return out


def dedup_near(rows: list[FilteredTrace], cfg: Config) -> Reasons:
    c = cfg.filter.dedup_near
    dupes = near_duplicates([f"{r.question} {r.rationale}" for r in rows], c.threshold, c.shingle, c.num_perm, c.seed)
    out: Reasons = [None] * len(rows)
    for i, (j, sim) in dupes.items():
        out[i] = f"near duplicate of {rows[j].id} sample {rows[j].sample} (estimated Jaccard {sim:.2f})"
    return out


def decontaminate(rows: list[FilteredTrace], cfg: Config) -> Reasons:
    from llmdistill.data import load_problems, load_question_texts

    c = cfg.filter.decontaminate
    texts = [q for path in c.eval_sets for q in load_question_texts(path, cfg.data)]
    if c.include_test_split:
        texts += [p.question for p in load_problems(cfg.data, cfg.data.test_split)]
    index = build_ngram_index(texts, c.ngram)
    log.info("decontaminate: %d %d-grams from %d evaluation questions", len(index), c.ngram, len(texts))
    out: Reasons = []
    for r in rows:
        hit = shared_ngram(r.question, index, c.ngram) or shared_ngram(r.rationale or "", index, c.ngram)
        out.append(f"shares the {c.ngram}-gram {hit!r} with an evaluation set" if hit else None)
    return out


def select(rows: list[FilteredTrace], cfg: Config) -> Reasons:
    """Keep at most ``max_per_problem`` traces per problem: the shortest, the first, or distinct ones."""
    c = cfg.filter.select
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        groups[r.id].append(i)
    keep: set[int] = set()
    for idx in groups.values():
        if c.strategy == "shortest":
            idx = sorted(idx, key=lambda i: (len((rows[i].rationale or "").split()), rows[i].sample))
        elif c.strategy == "distinct":
            seen, distinct = set(), []
            for i in idx:
                key = normalize(rows[i].rationale or "")
                if key not in seen:
                    seen.add(key)
                    distinct.append(i)
            idx = distinct
        keep.update(idx[: c.max_per_problem])
    return [None if i in keep else f"not among the {c.max_per_problem} {c.strategy} traces of its problem" for i in range(len(rows))]


FILTER_FUNCTIONS: dict[str, Callable[[list[FilteredTrace], Config], Reasons]] = {
    "truncated": truncated, "parse": parse, "correct": correct, "vote": vote, "length": length, "degenerate": degenerate,
    "dedup_exact": dedup_exact, "dedup_near": dedup_near, "decontaminate": decontaminate, "select": select,
}


def enabled(cfg: Config, name: str) -> bool:
    section = getattr(cfg.filter, name, None)
    return section is None or section.enabled  # parse has no section: it always runs
