"""The rules of the filter stage (``filter.order``): small functions in a registry, each with its config section.

A filter sees the rows still kept and returns, for each, a reason to reject it or None to keep
it. The stage streams: a filter is handed the kept rows a chunk at a time, in file order.

- Row filters (truncated, parse, correct, length, degenerate) judge each row alone.
- Sequential filters (dedup_exact, dedup_near, decontaminate) keep state across chunks: the keys
  and the MinHash-LSH index of the rows kept so far, the evaluation n-grams.
- Group filters (vote, select) judge a row by its problem's other rows: they ``observe`` every row
  that reaches them in one pass, then judge them in the next (``GROUP_FILTERS``).
- The text-heavy filters (``FEATURE_FILTERS``) split their per-row work out as ``features(texts)``,
  which the stage may compute in worker processes and pass back as ``f(rows, features)``.

``make_filter(name, cfg)`` returns the callable for one run; ``FILTER_FUNCTIONS[name](rows, cfg)``
judges a whole list at once (the same rules, for tests and small inputs)."""

from __future__ import annotations

import logging
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

from llmdistill.config import Config
from llmdistill.records import FilteredTrace
from llmdistill.stages.filter.dedup import NearDupIndex, build_ngram_index, exact_key, ngrams, shared_ngram, words

log = logging.getLogger(__name__)
Reasons = list["str | None"]
Texts = tuple  # (question, rationale, answer_key): what a filter's features are computed from


def row_texts(rows: list[FilteredTrace]) -> list[Texts]:
    """The part of each row that the text-heavy filters read: small to send to a worker process."""
    return [(r.question, r.rationale, r.answer_key) for r in rows]


def truncated(rows: list[FilteredTrace], cfg: Config) -> Reasons:
    return [
        "generation hit max_new_tokens (finish_reason=length)"
        if r.finish_reason == "length"
        else "the thinking never closed (<think> without </think>)"
        if r.truncated
        else None
        for r in rows
    ]


def parse(rows: list[FilteredTrace], cfg: Config) -> Reasons:
    return [r.reason if r.verdict == "unparseable" else None for r in rows]


def correct(rows: list[FilteredTrace], cfg: Config) -> Reasons:
    keep_hinted = cfg.filter.keep_rationalized
    return [
        f"wrong answer: {r.reason}"
        if r.verdict == "wrong"
        else "rationalized trace (filter.keep_rationalized is false)"
        if r.rationalized and not keep_hinted
        else None
        for r in rows
    ]


class Vote:
    """Majority answer per problem; keep samples agreeing with gold (labelled) or the majority.
    The state is a count of answers per problem."""

    group = True

    def __init__(self, cfg: Config):
        self.min_agreement = cfg.filter.vote.min_agreement
        self.counts: dict[str, Counter] = defaultdict(Counter)
        self.sizes: Counter = Counter()
        self.decided: dict[str, tuple] | None = None

    def observe(self, rows: list[FilteredTrace]) -> None:
        for r in rows:
            self.sizes[r.id] += 1
            if r.answer_key is not None:  # None answers do not vote (tasks.majority)
                self.counts[r.id][r.answer_key] += 1
            else:
                self.counts[r.id]

    def __call__(self, rows: list[FilteredTrace]) -> Reasons:
        if self.decided is None:
            self.decided = {}
            for pid, counts in self.counts.items():
                top, votes = counts.most_common(1)[0] if counts else (None, 0)
                self.decided[pid] = (top, round(votes / self.sizes[pid], 4))
            self.counts = {}
        out: Reasons = []
        for r in rows:
            r.majority, r.agreement = self.decided[r.id]
            if r.agreement < self.min_agreement:
                out.append(f"majority answer {r.majority!r} has agreement {r.agreement} < {self.min_agreement}")
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


_LINE_BREAK = re.compile("[\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")  # what str.splitlines splits on


def degenerate_reason(text: str, c) -> str | None:
    """Why a rationale is degenerate (a line repeated, or too many of its word n-grams repeat), or None."""
    if _LINE_BREAK.search(text):
        lines = Counter(line.strip() for line in text.splitlines() if line.strip())
        line, repeats = lines.most_common(1)[0] if lines else ("", 0)
    else:
        line, repeats = text.strip(), 1 if text.strip() else 0
    ws = words(text)
    count = len(ws) - c.ngram + 1
    repeated = 1 - len(set(ngrams(ws, c.ngram))) / count if count > 0 else 0.0
    if repeats >= c.max_line_repeats:
        return f"line repeated {repeats} times: {line[:60]!r}"
    if repeated > c.max_repeated_ngram_fraction:
        return f"{repeated:.0%} of its {c.ngram}-grams repeat"
    return None


class Degenerate:
    """``degenerate`` with its per-row work split out as ``features`` (computable in a worker)."""

    def __init__(self, cfg: Config):
        self.c = cfg.filter.degenerate

    def features(self, texts: list[Texts]) -> Reasons:
        return [degenerate_reason(rationale or "", self.c) for _, rationale, _ in texts]

    def __call__(self, rows: list[FilteredTrace], features: Reasons | None = None) -> Reasons:
        return features if features is not None else self.features(row_texts(rows))


class DedupExact:
    """The first row with a given normalized (question, rationale, answer) is kept; the state is a
    16-byte key per distinct row and the id and sample of its first row."""

    def __init__(self, cfg: Config):
        self.seen: dict[bytes, str] = {}

    def features(self, texts: list[Texts]) -> list[bytes]:
        return [exact_key(f"{question}\n{rationale}\n{answer_key}") for question, rationale, answer_key in texts]

    def __call__(self, rows: list[FilteredTrace], features: list[bytes] | None = None) -> Reasons:
        out: Reasons = []
        seen = self.seen
        for r, key in zip(rows, features if features is not None else self.features(row_texts(rows)), strict=True):
            first = seen.get(key)
            if first is None:
                seen[key] = f"{r.id} sample {r.sample}"
                out.append(None)
            else:
                out.append(f"exact duplicate of {first}")
        return out


class DedupNear:
    """MinHash-LSH near duplicates of the rows kept so far (``dedup.NearDupIndex``)."""

    def __init__(self, cfg: Config, work: Path | None = None):
        c = cfg.filter.dedup_near
        self.index = NearDupIndex(c.threshold, c.shingle, c.num_perm, c.seed, spill=str(work / "minhashes.bin") if work else None)
        self.labels: list[str] = []  # the kept rows' id and sample, for the reason

    def features(self, texts: list[Texts]):
        """The texts' MinHashes: uint32 [len(texts), num_perm]."""
        return self.index.minhashes([words(question) + words(rationale or "") for question, rationale, _ in texts])

    def __call__(self, rows: list[FilteredTrace], features=None) -> Reasons:
        out: Reasons = []
        sigs = features if features is not None else self.features(row_texts(rows))
        for r, hit in zip(rows, self.index.check(sigs)):
            if hit is None:
                self.labels.append(f"{r.id} sample {r.sample}")
                out.append(None)
            else:
                out.append(f"near duplicate of {self.labels[hit[0]]} (estimated Jaccard {hit[1]:.2f})")
        return out

    def close(self) -> None:
        self.index.close()


class Decontaminate:
    """Rows sharing a word n-gram with an evaluation set; the n-gram index is built once."""

    def __init__(self, cfg: Config):
        from llmdistill.data import load_problems, load_question_texts

        self.c = c = cfg.filter.decontaminate
        texts = [q for path in c.eval_sets for q in load_question_texts(path, cfg.data)]
        if c.include_test_split:
            texts += [p.question for p in load_problems(cfg.data, cfg.data.test_split)]
        self.index = build_ngram_index(texts, c.ngram)
        log.info("decontaminate: %d %d-grams from %d evaluation questions", len(self.index), c.ngram, len(texts))

    def features(self, texts: list[Texts]) -> Reasons:
        n, index = self.c.ngram, self.index
        out: Reasons = []
        for question, rationale, _ in texts:
            hit = shared_ngram(question, index, n) or shared_ngram(rationale or "", index, n)
            out.append(f"shares the {n}-gram {hit!r} with an evaluation set" if hit else None)
        return out

    def __call__(self, rows: list[FilteredTrace], features: Reasons | None = None) -> Reasons:
        return features if features is not None else self.features(row_texts(rows))


class Select:
    """Keep at most ``max_per_problem`` traces per problem: the shortest, the first, or distinct ones.
    The state is, per problem, the position (among the rows reaching select) and sort key of its rows."""

    group = True

    def __init__(self, cfg: Config):
        self.c = cfg.filter.select
        self.groups: dict[str, list[tuple]] = defaultdict(list)
        self.position = 0
        self.keep: set[int] | None = None

    def observe(self, rows: list[FilteredTrace]) -> None:
        strategy = self.c.strategy
        for r in rows:
            key: tuple[int, int] | bytes | None
            if strategy == "shortest":
                key = (len((r.rationale or "").split()), r.sample)
            elif strategy == "distinct":
                key = exact_key(r.rationale or "")  # normalize()d text, hashed: equal keys, equal texts
            else:
                key = None
            self.groups[r.id].append((self.position, key))
            self.position += 1

    def __call__(self, rows: list[FilteredTrace]) -> Reasons:
        c = self.c
        if self.keep is None:
            self.keep = set()
            for members in self.groups.values():
                if c.strategy == "shortest":
                    members = sorted(members, key=lambda m: m[1])  # stable: ties keep their order
                elif c.strategy == "distinct":
                    seen, distinct = set(), []
                    for m in members:
                        if m[1] not in seen:
                            seen.add(m[1])
                            distinct.append(m)
                    members = distinct
                self.keep.update(m[0] for m in members[: c.max_per_problem])
            self.groups, self.position = {}, 0
        out: Reasons = []
        for _ in rows:
            out.append(None if self.position in self.keep else f"not among the {c.max_per_problem} {c.strategy} traces of its problem")
            self.position += 1
        return out


ROW_FILTERS = {"truncated": truncated, "parse": parse, "correct": correct, "length": length}
FILTER_CLASSES = {
    "degenerate": Degenerate,
    "dedup_exact": DedupExact,
    "dedup_near": DedupNear,
    "decontaminate": Decontaminate,
    "vote": Vote,
    "select": Select,
}
GROUP_FILTERS = {"vote", "select"}
FEATURE_FILTERS = {"degenerate", "dedup_exact", "dedup_near", "decontaminate"}


def make_filter(name: str, cfg: Config, work: Path | None = None):
    """The filter ``name`` for one run: ``f(rows) -> reasons``; a group filter also has
    ``observe(rows)``. ``work``: a scratch folder (dedup_near keeps its MinHashes there)."""
    if name in ROW_FILTERS:
        rule = ROW_FILTERS[name]
        return lambda rows: rule(rows, cfg)
    if name == "dedup_near":
        return DedupNear(cfg, work)
    if name in FILTER_CLASSES:
        return FILTER_CLASSES[name](cfg)
    return plugin_filter(name, cfg)


def plugin_filter(name: str, cfg: Config) -> Callable[[list[FilteredTrace]], Reasons]:
    """A plugin's ``judge(rows, options)``, checked to give one reason (or None) per row."""
    from llmdistill.errors import UserError
    from llmdistill.plugins import load

    judge, options = load("filter", name), cfg.filter.options.get(name, {})

    def run(rows: list[FilteredTrace]) -> Reasons:
        reasons = list(judge(rows, options))
        if len(reasons) != len(rows) or not all(r is None or isinstance(r, str) for r in reasons):
            raise UserError(f"filter {name!r} must return one reason (a string) or None per row: got {len(reasons)} for {len(rows)} rows")
        return reasons

    return run


def judge_all(name: str, rows: list[FilteredTrace], cfg: Config) -> Reasons:
    """The filter ``name`` (built in or a plugin's) on a whole list at once."""
    return FILTER_FUNCTIONS[name](rows, cfg) if name in FILTER_FUNCTIONS else plugin_filter(name, cfg)(rows)


def _whole(name: str) -> Callable[[list[FilteredTrace], Config], Reasons]:
    def judge(rows: list[FilteredTrace], cfg: Config) -> Reasons:
        f = make_filter(name, cfg)
        if name in GROUP_FILTERS:
            f.observe(rows)
        return f(rows)

    judge.__name__ = name
    return judge


FILTER_FUNCTIONS: dict[str, Callable[[list[FilteredTrace], Config], Reasons]] = {
    name: ROW_FILTERS.get(name) or _whole(name) for name in [*ROW_FILTERS, *FILTER_CLASSES]
}
