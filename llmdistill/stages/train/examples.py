"""Training examples for each objective, the validation split, and the preflight check.

- ``label``: question -> answer only (gold or teacher answer), the paper's standard fine-tuning.
- ``cot``: question -> rationale + answer, one completion.
- ``step_by_step``: each trace gives a label example and a rationale example, with task-specific
  prompts (``[label]`` / ``[rationale]`` task prefixes); at inference the student gets the label
  prompt only.

Prompts come from the same prompt file as the teacher's, rendered for the student's tokenizer;
completions are re-written from the parsed rationale and answer, so runaway teacher text never
reaches the student.
"""

from __future__ import annotations

import hashlib
import logging
import re
import statistics
from typing import Any, Literal

from llmdistill.answers.checking import LETTERS
from llmdistill.answers.reading import format_number, to_number
from llmdistill.config import Config
from llmdistill.errors import UserError
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


def in_subset(problem_id: str, fraction: float) -> bool:
    """``train.data_fraction``: nested subsets (the 25% subset is inside the 50% one)."""
    return fraction >= 1 or _unit("subset", problem_id) < fraction


def build_examples(cfg: Config, traces: list[FilteredTrace], tokenizer, problems: list[Problem] | None = None) -> list[TrainExample]:
    """Examples for ``train.mode``; ``problems`` (the train split) for label training on gold answers.

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

    out: list[TrainExample] = []
    traces = [tr for tr in traces if in_subset(tr.id, t.data_fraction)]
    problems = None if problems is None else [p for p in problems if in_subset(p.id, t.data_fraction)]
    if t.mode == "label" and t.label_source == "gold":
        if problems is None:
            raise ValueError("label training on gold answers needs the train split's problems")
        return [example(p, 0, "label", "", gold) for p in problems if (gold := gold_output(p, cfg)) is not None]  # None: no answer
    if t.mode == "label":
        seen = set()
        for tr in traces:  # one example per distinct (problem, answer): n agreeing samples are one label
            key = (tr.id, tr.answer_key or tr.pred)
            if tr.pred is not None and key not in seen:
                seen.add(key)
                out.append(example(tr, tr.sample, "label", "", tr.pred))
        return out
    if gold_labels_for_all(t):
        return _gold_step_by_step(cfg, traces, problems, example, template, prefix)
    for tr in traces:
        if t.mode == "cot":
            out.append(example(tr, tr.sample, "cot", tr.training_rationale(t.thinking == "keep", tags=True), tr.pred or ""))
            continue
        label = label_of(tr)
        rationale = tr.training_rationale(t.thinking == "keep", tags=False)
        if cfg.answer_first():
            if label is not None:
                answer = template.output_text("label", "", label)
                out.append(
                    TrainExample(
                        **example(tr, tr.sample, "label", "", label).model_dump(exclude={"task", "completion"}),
                        task="answer_rationale",
                        completion=prefix + answer + (ANSWER_SEPARATOR + rationale if rationale else ""),
                    )
                )
            continue
        if label is not None:
            out.append(example(tr, tr.sample, "label", "", label))
        if rationale:
            out.append(example(tr, tr.sample, "rationale", rationale, ""))
    return out


def _gold_step_by_step(
    cfg: Config, traces: list[FilteredTrace], problems: list[Problem] | None, example, template, prefix
) -> list[TrainExample]:
    """``labels_for: all_problems``: a gold label for every train problem, a rationale where a kept
    trace gives one. two_tasks: the label example, then the rationale examples of the problem's
    traces; answer_first: one sequence per trace (gold answer, then the rationale), or the answer
    alone for a problem without a kept trace."""
    if problems is None:
        raise ValueError("train.labels_for 'all_problems' needs the train split's problems")
    t = cfg.train
    by_id: dict[str, list[FilteredTrace]] = {}
    for tr in traces:
        by_id.setdefault(tr.id, []).append(tr)
    out: list[TrainExample] = []
    for p in problems:
        label = gold_output(p, cfg)
        if label is None:
            continue
        rationales = [(tr.sample, r) for tr in by_id.get(p.id, []) if (r := tr.training_rationale(t.thinking == "keep", tags=False))]
        if cfg.answer_first():
            answer = template.output_text("label", "", label)
            for sample, rationale in rationales or [(0, "")]:
                base = example(p, sample, "label", "", label).model_dump(exclude={"task", "completion"})
                out.append(
                    TrainExample(
                        **base, task="answer_rationale", completion=prefix + answer + (ANSWER_SEPARATOR + rationale if rationale else "")
                    )
                )
            continue
        first = rationales[0][0] if rationales else 0
        out.append(example(p, first, "label", "", label))  # grouped with its first rationale
        out += [example(p, sample, "rationale", rationale, "") for sample, rationale in rationales]
    return out


def tokenize_answer_first(examples: list[TrainExample], tokenizer) -> list[dict]:
    """Rows for the answer_first layout: input_ids and labels (prompt masked, EOS appended), and how
    many completion tokens are the answer's, so the loss can weigh answer and rationale tokens apart.
    The pieces are tokenized one by one, so the boundary is exact."""
    eos = tokenizer.eos_token_id
    rows = []
    for e in examples:
        answer, _, rationale = e.completion.partition(ANSWER_SEPARATOR)
        prompt = tokenizer(e.prompt)["input_ids"]  # as TRL tokenizes the prompts of the other objectives
        ans = tokenizer(answer, add_special_tokens=False)["input_ids"]
        rest = tokenizer(ANSWER_SEPARATOR + rationale, add_special_tokens=False)["input_ids"] if rationale else []
        rows.append({"input_ids": prompt + ans + rest + [eos], "labels": [-100] * len(prompt) + ans + rest + [eos], "answer_len": len(ans)})
    return rows


def _dist(values: list[int]) -> dict:
    if not values:
        return {"n": 0}
    s = sorted(values)
    return {
        "min": s[0],
        "p50": int(statistics.median(s)),
        "p95": s[min(len(s) - 1, int(0.95 * len(s)))],
        "max": s[-1],
        "mean": round(sum(s) / len(s), 1),
    }


def preflight(cfg: Config, examples: list[TrainExample], tokenizer) -> tuple[list[TrainExample], dict]:
    """Check lengths against ``train.max_length`` before any training step.

    An example longer than ``max_length`` would be cut at the end, which is where its answer (and
    EOS) are: refuse with the numbers, or with ``on_overlength: drop`` drop and count those
    examples. Returns the examples to train on and the report (also written to preflight.json).
    """
    if tokenizer.eos_token is None:
        raise UserError("the student's tokenizer has no EOS token: the student could never learn to stop")
    warnings = []
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        warnings.append("the tokenizer has no pad token of its own; EOS is used for padding (padding is outside the loss)")
    prompts = tokenizer([e.prompt for e in examples], add_special_tokens=False)["input_ids"]
    completions = tokenizer([e.completion for e in examples], add_special_tokens=False)["input_ids"]
    totals = [len(p) + len(c) + 1 for p, c in zip(prompts, completions)]  # + EOS
    limit = cfg.train.max_length
    over = [i for i, n in enumerate(totals) if n > limit]
    in_eos = sum(tokenizer.eos_token in e.completion for e in examples)
    if in_eos:
        warnings.append(f"{in_eos} completions already contain the EOS token {tokenizer.eos_token!r} before their end")
    report: dict[str, Any] = {
        "examples": len(examples),
        "by_task": {task: sum(e.task == task for e in examples) for task in sorted({e.task for e in examples})},
        "validation_examples": sum(e.split == "validation" for e in examples),
        "max_length": limit,
        "on_overlength": cfg.train.on_overlength,  # what an example over max_length meets: refused, or dropped (below)
        "prompt_tokens": _dist([len(p) for p in prompts]),
        "completion_tokens": _dist([len(c) + 1 for c in completions]),
        "total_tokens": _dist(totals),
        "over_max_length": len(over),
        "warnings": warnings,
    }
    if over and report["on_overlength"] == "refuse":
        worst = max(totals)
        raise UserError(
            f"preflight: {len(over)} of {len(examples)} training examples are longer than train.max_length={limit} tokens "
            f"(longest {worst}, p95 {report['total_tokens']['p95']}); truncation would cut their answers. Raise train.max_length "
            f"to at least {worst}, shorten the rationales (filter.length.max_words), or set train.on_overlength: drop"
        )
    keep = set(range(len(examples))) - set(over)
    kept = [e for i, e in enumerate(examples) if i in keep]
    report["dropped_over_max_length"] = [f"{examples[i].id}#{examples[i].sample}:{examples[i].task} ({totals[i]} tokens)" for i in over]
    train_tokens = sum(totals[i] for i in keep if examples[i].split == "train")
    report["train_tokens_per_epoch"] = train_tokens
    for w in warnings:
        log.warning("preflight: %s", w)
    if not any(e.split == "train" for e in kept):
        raise UserError("preflight: no training examples left (all are over max_length or in the validation split)")
    return kept, report
