"""Training examples for each objective, the validation split, and the preflight check.

- ``label``: question -> answer only (gold or teacher answer), the paper's standard fine-tuning.
- ``cot``: question -> rationale + answer, one completion.
- ``step_by_step``: each trace gives a label example and a rationale example, with task-specific
  prompts (``[label]`` / ``[rationale]`` task prefixes); at inference the student gets the label
  prompt only.

Prompts come from the same prompt file as the teacher's, rendered for the student's tokenizer;
completions are re-written from the parsed rationale and answer, so runaway teacher text never
reaches the student.

Examples are built one at a time from the kept traces read as they go (``KeptTraces``), so a
million traces never sit in memory as Python objects. Held for the whole set: ``Preflight``'s two
token counts an example (8 bytes); label training's digest of each (problem, answer) it kept, in a
set (about 100 bytes a label); gold labels for every problem find a problem's traces through an
index of 16 bytes a trace.
"""

from __future__ import annotations

import hashlib
import logging
import re
from array import array
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import numpy as np

from llmdistill.answers.checking import LETTERS
from llmdistill.answers.reading import format_number, to_number
from llmdistill.config import Config
from llmdistill.errors import UserError
from llmdistill.jsonl import RowsAt, iter_offsets, iter_rows
from llmdistill.prompts import ANSWER_SEPARATOR, PromptRenderer, load_prompt
from llmdistill.records import FilteredTrace, Problem, TrainExample

log = logging.getLogger(__name__)
Task = Literal["cot", "label", "rationale", "answer_rationale"]  # TrainExample.task


def gold_output(problem: Problem, cfg: Config) -> str | None:
    """The gold answer written the way a model answers: '450' for SVAMP's '( 10.0 * 45.0 )'."""
    if problem.answer is None:
        return None
    if cfg.data.answer_type == "numeric" and cfg.train.gold_label == "as_written":
        return _tidy_expression(problem.answer)
    if cfg.data.answer_type == "numeric":
        value = to_number(problem.answer)
        if value is None:
            raise UserError(f"problem {problem.id}: gold answer {problem.answer!r} is not a number")
        return format_number(value)
    if cfg.data.answer_type == "choice" and problem.choices:
        return f"({problem.answer}) {problem.choices[LETTERS.index(problem.answer)]}"
    return problem.answer


def _tidy_expression(text: str) -> str:
    """'( 10.0 * ( 6.0 + 3.0 ) )' -> '(10 * (6 + 3))': the gold expression as a model would write it."""
    text = re.sub(r"(\d)\.0+\b", r"\1", text.strip())
    return re.sub(r"\(\s+", "(", re.sub(r"\s+\)", ")", text))


def _unit(salt: str, problem_id: str) -> float:
    return int(hashlib.sha256(f"{salt}:{problem_id}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def in_validation(problem_id: str, fraction: float, seed: int) -> bool:
    """A stable split by problem id: every sample of a problem lands on the same side."""
    return fraction > 0 and _unit(str(seed), problem_id) < fraction


def gold_labels_for_all(t) -> bool:
    """step_by_step with a gold label example for every train problem, traced or not."""
    return t.mode == "step_by_step" and t.label_source == "gold" and t.labels_for == "all_problems"


def subset_rank(problem_id: str) -> float:
    """A problem's place in the nested subsets, in [0, 1]: the ``f`` subset is the problems below ``f``."""
    return _unit("subset", problem_id)


def in_subset(problem_id: str, fraction: float) -> bool:
    """``train.data_fraction``: nested subsets (the 25% subset is inside the 50% one)."""
    return fraction >= 1 or subset_rank(problem_id) < fraction


def uses(problem_id: str, t) -> bool:
    """Whether a train run uses the problem: its validation problems are held out of the whole
    split first (the same for every ``data_fraction``, so a data-efficiency curve picks every
    checkpoint on the same problems); the fraction is then taken of the rest."""
    return in_validation(problem_id, t.validation_fraction, t.seed) or in_subset(problem_id, t.data_fraction)


def digest(*parts: object) -> bytes:
    """16 bytes naming a key (an id, a sample...): a million keys in 16 MB, collisions out of reach."""
    return hashlib.blake2b("\0".join(map(str, parts)).encode(), digest_size=16).digest()


def _h64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


class KeptTraces:
    """The filter's kept traces (``kept.jsonl``), read from the file on every pass, never held."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __iter__(self) -> Iterator[FilteredTrace]:
        return iter_rows(self.path, FilteredTrace)

    def empty(self) -> bool:
        for _ in self:
            return False
        return True

    @contextmanager
    def by_problem(self) -> Iterator[Callable[[str], list[FilteredTrace]]]:
        """A problem's traces in file order, read again by byte offset: the index holds a 64-bit
        hash of the id and the offset of each trace (16 bytes), sorted by hash."""
        hashes, offsets = array("Q"), array("q")
        for offset, tr in iter_offsets(self.path, FilteredTrace):
            hashes.append(_h64(tr.id))
            offsets.append(offset)
        order = np.argsort(np.frombuffer(hashes, dtype=np.uint64), kind="stable")  # stable: file order within an id
        keys, at = np.frombuffer(hashes, dtype=np.uint64)[order], np.frombuffer(offsets, dtype=np.int64)[order]
        del hashes, offsets, order
        with RowsAt(self.path, FilteredTrace) as rows:

            def of(problem_id: str) -> list[FilteredTrace]:
                h = np.uint64(_h64(problem_id))
                found = (rows[int(o)] for o in at[np.searchsorted(keys, h, "left") : np.searchsorted(keys, h, "right")])
                return [tr for tr in found if tr.id == problem_id]  # (a hash shared by two ids)

            yield of


def _by_problem(traces: Iterable[FilteredTrace]):
    """``KeptTraces.by_problem`` for traces in memory (a list in a test or a script)."""
    if isinstance(traces, KeptTraces):
        return traces.by_problem()
    by_id: dict[str, list[FilteredTrace]] = {}
    for tr in traces:
        by_id.setdefault(tr.id, []).append(tr)
    return nullcontext(lambda problem_id: by_id.get(problem_id, []))


def build_examples(
    cfg: Config, traces: Iterable[FilteredTrace], tokenizer, problems: Iterable[Problem] | None = None
) -> Iterator[TrainExample]:
    """Examples for ``train.mode``, one at a time; ``problems`` (the train split) for label training
    on gold answers.

    Step-by-step examples come in (label, rationale) pairs of one trace, next to each other.
    """
    t = cfg.train
    template = load_prompt(cfg.data.prompt)
    render = PromptRenderer(template, tokenizer, cfg.student_shots(), cfg.data.prompt_format)
    prefix = render.completion_prefix

    def example(row: Problem, sample: int, task: Task, rationale: str, answer: str) -> TrainExample:
        split: Literal["train", "validation"] = "validation" if in_validation(row.id, t.validation_fraction, t.seed) else "train"
        return TrainExample(
            id=row.id,
            sample=sample,
            task=task,
            split=split,
            prompt=render(row.question, task),
            completion=prefix + template.output_text(task, rationale, answer),
        )

    def label_of(trace: FilteredTrace) -> str | None:
        return gold_output(trace, cfg) if t.label_source == "gold" else trace.pred

    traced = (tr for tr in traces if uses(tr.id, t))
    problems = None if problems is None else (p for p in problems if uses(p.id, t))
    if t.mode == "label" and t.label_source == "gold":
        if problems is None:
            raise ValueError("label training on gold answers needs the train split's problems")
        yield from (example(p, 0, "label", "", gold) for p in problems if (gold := gold_output(p, cfg)) is not None)  # None: no answer
        return
    if t.mode == "label":
        seen: set[bytes] = set()  # one example per distinct (problem, answer): n agreeing samples are one label
        for tr in traced:
            key = digest(tr.id, tr.answer_key or tr.pred)
            if tr.pred is not None and key not in seen:
                seen.add(key)
                yield example(tr, tr.sample, "label", "", tr.pred)
        return
    if gold_labels_for_all(t):
        if problems is None:
            raise ValueError("train.labels_for 'all_problems' needs the train split's problems")
        with _by_problem(traces) as traces_of:
            yield from _gold_step_by_step(cfg, traces_of, problems, example, template, prefix)
        return
    for tr in traced:
        if t.mode == "cot":
            yield example(tr, tr.sample, "cot", tr.training_rationale(t.thinking == "keep", tags=True), tr.pred or "")
            continue
        label = label_of(tr)
        rationale = tr.training_rationale(t.thinking == "keep", tags=False)
        if cfg.answer_first():
            if label is not None:
                answer = template.output_text("label", "", label)
                yield TrainExample(
                    **example(tr, tr.sample, "label", "", label).model_dump(exclude={"task", "completion"}),
                    task="answer_rationale",
                    completion=prefix + answer + (ANSWER_SEPARATOR + rationale if rationale else ""),
                )
            continue
        if label is not None:
            yield example(tr, tr.sample, "label", "", label)
        if rationale:
            yield example(tr, tr.sample, "rationale", rationale, "")


def _gold_step_by_step(
    cfg: Config, traces_of: Callable[[str], list[FilteredTrace]], problems: Iterable[Problem], example, template, prefix
) -> Iterator[TrainExample]:
    """``labels_for: all_problems``: a gold label for every train problem, a rationale where a kept
    trace gives one. two_tasks: the label example, then the rationale examples of the problem's
    traces; answer_first: one sequence per trace (gold answer, then the rationale), or the answer
    alone for a problem without a kept trace."""
    t = cfg.train
    for p in problems:
        label = gold_output(p, cfg)
        if label is None:
            continue
        rationales = [(tr.sample, r) for tr in traces_of(p.id) if (r := tr.training_rationale(t.thinking == "keep", tags=False))]
        if cfg.answer_first():
            answer = template.output_text("label", "", label)
            for sample, rationale in rationales or [(0, "")]:
                base = example(p, sample, "label", "", label).model_dump(exclude={"task", "completion"})
                yield TrainExample(
                    **base, task="answer_rationale", completion=prefix + answer + (ANSWER_SEPARATOR + rationale if rationale else "")
                )
            continue
        first = rationales[0][0] if rationales else 0
        yield example(p, first, "label", "", label)  # grouped with its first rationale
        yield from (example(p, sample, "rationale", rationale, "") for sample, rationale in rationales)


def answer_first_row(e: TrainExample, tokenizer) -> dict:
    """The answer_first layout's row: input_ids and labels (prompt masked, EOS appended), and how
    many completion tokens are the answer's, so the loss can weigh answer and rationale tokens apart.
    The pieces are tokenized one by one, so the boundary is exact."""
    eos = tokenizer.eos_token_id
    answer, _, rationale = e.completion.partition(ANSWER_SEPARATOR)
    prompt = tokenizer(e.prompt)["input_ids"]  # as TRL tokenizes the prompts of the other objectives
    ans = tokenizer(answer, add_special_tokens=False)["input_ids"]
    rest = tokenizer(ANSWER_SEPARATOR + rationale, add_special_tokens=False)["input_ids"] if rationale else []
    return {"input_ids": prompt + ans + rest + [eos], "labels": [-100] * len(prompt) + ans + rest + [eos], "answer_len": len(ans)}


def tokenize_answer_first(examples: Iterable[TrainExample], tokenizer) -> list[dict]:
    """``answer_first_row`` of each example."""
    return [answer_first_row(e, tokenizer) for e in examples]


def length_stats(values: np.ndarray) -> dict:
    """min, median (int), p95, max and mean of token counts, as Python numbers."""
    if not len(values):
        return {"n": 0}
    s = np.sort(values)
    n = len(s)
    median = int(s[n // 2]) if n % 2 else int((int(s[n // 2 - 1]) + int(s[n // 2])) / 2)  # statistics.median, then int
    return {
        "min": int(s[0]),
        "p50": median,
        "p95": int(s[min(n - 1, int(0.95 * n))]),
        "max": int(s[-1]),
        "mean": round(int(s.sum(dtype=np.int64)) / n, 1),
    }


class Preflight:
    """Check lengths against ``train.max_length`` before any training step, an example at a time.

    An example longer than ``max_length`` would be cut at the end, which is where its answer (and
    EOS) are: refuse with the numbers, or with ``on_overlength: drop`` drop and count those
    examples. ``kept`` passes on the examples to train on; ``report`` (also written to
    preflight.json) refuses once they have all passed. Holds two token counts an example (8 bytes),
    for the percentiles, and the names of the examples it dropped.
    """

    def __init__(self, cfg: Config, tokenizer, chunk: int = 512):
        if tokenizer.eos_token is None:
            raise UserError("the student's tokenizer has no EOS token: the student could never learn to stop")
        self.cfg, self.tokenizer, self.chunk = cfg, tokenizer, chunk
        self.warnings = []
        if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
            self.warnings.append("the tokenizer has no pad token of its own; EOS is used for padding (padding is outside the loss)")
        self.prompt_len, self.completion_len = array("i"), array("i")  # completion: + EOS
        self.by_task: dict[str, int] = {}
        self.validation = self.in_eos = self.train_tokens = self.train_kept = 0
        self.dropped: list[str] = []

    def kept(self, examples: Iterable[TrainExample]) -> Iterator[TrainExample]:
        tok, limit, examples = self.tokenizer, self.cfg.train.max_length, iter(examples)
        while chunk := list(islice(examples, self.chunk)):  # tokenized a chunk at a time (the fast tokenizer batches)
            prompts = tok([e.prompt for e in chunk], add_special_tokens=False)["input_ids"]
            completions = tok([e.completion for e in chunk], add_special_tokens=False)["input_ids"]
            for e, p, c in zip(chunk, prompts, completions):
                total = len(p) + len(c) + 1  # + EOS
                self.prompt_len.append(len(p))
                self.completion_len.append(len(c) + 1)
                self.by_task[e.task] = self.by_task.get(e.task, 0) + 1
                self.validation += e.split == "validation"
                self.in_eos += tok.eos_token in e.completion
                if total > limit:
                    self.dropped.append(f"{e.id}#{e.sample}:{e.task} ({total} tokens)")
                    continue
                if e.split == "train":
                    self.train_tokens += total
                    self.train_kept += 1
                yield e

    def report(self) -> dict:
        """The report of every example ``kept`` has seen; a UserError where the config truncates
        answers (``on_overlength: refuse``) or leaves nothing to train on."""
        limit, n = self.cfg.train.max_length, len(self.prompt_len)
        prompts, completions = np.frombuffer(self.prompt_len, dtype=np.int32), np.frombuffer(self.completion_len, dtype=np.int32)
        totals = prompts.astype(np.int64) + completions
        warnings = list(self.warnings)
        if self.in_eos:
            warnings.append(f"{self.in_eos} completions already contain the EOS token {self.tokenizer.eos_token!r} before their end")
        report: dict[str, Any] = {
            "examples": n,
            "by_task": dict(sorted(self.by_task.items())),
            "validation_examples": self.validation,
            "max_length": limit,
            "on_overlength": self.cfg.train.on_overlength,  # what an example over max_length meets: refused, or dropped (below)
            "prompt_tokens": length_stats(prompts),
            "completion_tokens": length_stats(completions),
            "total_tokens": length_stats(totals),
            "over_max_length": len(self.dropped),
            "warnings": warnings,
        }
        if self.dropped and report["on_overlength"] == "refuse":
            worst = int(totals.max())
            raise UserError(
                f"preflight: {len(self.dropped)} of {n} training examples are longer than train.max_length={limit} tokens "
                f"(longest {worst}, p95 {report['total_tokens']['p95']}); truncation would cut their answers. Raise train.max_length "
                f"to at least {worst}, shorten the rationales (filter.length.max_words), or set train.on_overlength: drop"
            )
        report["dropped_over_max_length"] = list(self.dropped)
        report["train_tokens_per_epoch"] = self.train_tokens
        for w in warnings:
            log.warning("preflight: %s", w)
        if not self.train_kept:
            raise UserError("preflight: no training examples left (all are over max_length or in the validation split)")
        return report


def preflight(cfg: Config, examples: Iterable[TrainExample], tokenizer) -> tuple[list[TrainExample], dict]:
    """``Preflight`` over examples in memory: the examples to train on, and the report."""
    check = Preflight(cfg, tokenizer)
    kept = list(check.kept(examples))
    return kept, check.report()
