"""Tasks by configuration: how a dataset row becomes a question, what its gold answer is, and how
a model's answer is checked -- for numeric, multiple-choice, classification/NLI and LaTeX math data.

Checkers are plain functions in a registry (``CHECKERS``); each returns one of three outcomes
(correct, wrong, unparseable) with its reason, and ``answer_key`` gives the normalized answer
that voting compares. Math is checked on the answer as written (``math_answers``: math-verify
compares parsed values, which a key string cannot carry).
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Iterable
from functools import cache, lru_cache

from llmdistill.answers.latex import check_math, gold_math, math_key
from llmdistill.answers.reading import Verdict, format_number, parse_completion, to_number
from llmdistill.config import DataConfig
from llmdistill.errors import UnreadableGold, UserError
from llmdistill.records import FilteredTrace, Problem, Trace, extend_row

LETTERS = string.ascii_lowercase
# AQuA-RAT writes each option's letter into its text: "A)21", "(B) 21.5", "C. 22", "D: 22.5".
_OPTION_PREFIX = re.compile(r"\s*(?:\(([A-Za-z])\)|([A-Za-z])\s*[).:])\s*")
# A boolean gold (StrategyQA's true/false) is the label of one of these names.
_TRUTH = {"true": ("yes", "true"), "false": ("no", "false")}


# ---- building problems from rows -------------------------------------------------------------


def _choices(row: dict, cfg: DataConfig) -> list[str] | None:
    if not cfg.choices_field:
        return None
    raw = row.get(cfg.choices_field)
    if isinstance(raw, dict) and "text" in raw:  # HF commonsense_qa: {"label": [...], "text": [...]}
        raw = raw["text"]
    if isinstance(raw, str):
        raw = [c.strip() for c in raw.split("|")]
    if not isinstance(raw, list) or not raw or len(raw) > len(LETTERS):
        raise UserError(f"field '{cfg.choices_field}' must hold a list of 1-26 choices, got {str(raw)[:80]!r}")
    return _strip_option_letters([str(c) for c in raw])


def _strip_option_letters(choices: list[str]) -> list[str]:
    """'A)21', 'B)21.5', ... -> '21', '21.5', ...: only when every option carries its own letter, in order."""
    found = [_OPTION_PREFIX.match(c) for c in choices]
    if all(m and (m.group(1) or m.group(2)).lower() == LETTERS[i] for i, m in enumerate(found)):
        return [c[m.end() :].strip() for c, m in zip(choices, found) if m]
    return choices


def duplicate_choices(choices: list[str]) -> bool:
    """Whether a row lists the same choice text twice (about 1% of CommonsenseQA); their letters
    count as one answer (see ``_canonical``)."""
    return len({_norm(c) for c in choices}) < len(choices)


def _canonical(choices: list[str]) -> dict[str, str]:
    """Each letter -> the first letter with the same (normalized) choice text, so that duplicate
    choices are one answer for the gold, the model's answer and the vote."""
    first: dict[str, str] = {}
    return {LETTERS[i]: first.setdefault(_norm(c), LETTERS[i]) for i, c in enumerate(choices)}


def question_text(row: dict, cfg: DataConfig, choices: list[str] | None) -> str:
    """``question_format`` filled with the row's fields, then the choices as ``(a) ... (e)``."""
    try:
        text = cfg.question_format.format(**row) if cfg.question_format else str(row[cfg.question_field])
    except KeyError as e:
        raise UserError(f"data.question_format names field {e} that the rows do not have (fields: {', '.join(row)})") from None
    if choices:
        text += "\nAnswer choices: " + " ".join(f"({LETTERS[i]}) {c}" for i, c in enumerate(choices))
    return text


def gold_answer(raw, cfg: DataConfig, choices: list[str] | None) -> str | None:
    """The gold answer as the checker expects it: a number/equation, a choice letter, a label name."""
    if raw is None or raw == "":
        return None
    text = str(raw).strip()
    if cfg.gold_regex:
        m = re.search(cfg.gold_regex, text, re.DOTALL)
        if not m:
            raise UnreadableGold(f"data.gold_regex {cfg.gold_regex!r} does not match gold answer {text[:80]!r}")
        text = m.group(1).strip()
    if cfg.answer_type == "numeric" and "####" in text:  # GSM8K: worked solution, then "#### 72"
        text = text.rsplit("####", 1)[1].strip()
    if cfg.answer_type == "choice":
        return _gold_choice(text, choices or [])
    if cfg.answer_type == "label":
        return _gold_label(text, cfg.labels or [])
    if cfg.answer_type == "math":
        return gold_math(text)
    return text


def _gold_choice(text: str, choices: list[str]) -> str:
    """The gold's letter, the first of duplicate choices (a text listed twice is one answer)."""
    canon = _canonical(choices)
    letter = _letter(text, len(choices))
    if letter is None:
        matches = {canon[LETTERS[i]] for i, c in enumerate(choices) if _norm(c) == _norm(text)}
        if len(matches) != 1:
            raise UnreadableGold(f"gold answer {text[:80]!r} is neither a choice letter nor one of the choices {choices}")
        letter = matches.pop()
    return canon[letter]


def _gold_label(text: str, labels: list[str]) -> str:
    if text.lstrip("-").isdigit():
        i = int(text)
        if not 0 <= i < len(labels):
            raise UserError(f"gold label index {i} is outside data.labels {labels}")
        return labels[i]
    for label in labels:
        if _norm(label) == _norm(text):
            return label
    truth = _truth_label(text, labels)
    if truth is None:
        raise UserError(f"gold label {text!r} is not in data.labels {labels}")
    return truth


def _truth_label(text: str, labels: list[str]) -> str | None:
    """true/false (a JSON boolean or its text) as the label named yes/true or no/false; None if not one."""
    names = _TRUTH.get(_norm(text), ())
    return next((lab for lab in labels if _norm(lab) in names), None)


def make_problem(row: dict, cfg: DataConfig, pid: str, split: str) -> Problem:
    choices = _choices(row, cfg)
    return Problem(
        id=pid,
        question=question_text(row, cfg, choices),
        answer=gold_answer(row.get(cfg.answer_field), cfg, choices),
        choices=choices,
        split=split,
    )


# ---- reading and checking model answers ------------------------------------------------------


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s.lower().strip().strip(".!\"'")).strip()


def _letter(text: str, n: int) -> str | None:
    """A choice letter given as '(b)', 'b)', 'B', 'b.' or 'option b'; None if there is none."""
    valid = LETTERS[:n]
    m = re.search(rf"\(([{valid}])\)", text, re.IGNORECASE) or re.fullmatch(rf"\s*(?:option\s+)?([{valid}])[.):]?\s*", text, re.IGNORECASE)
    return m.group(1).lower() if m else None


def choice_key(pred: str, problem: Problem) -> tuple[str | None, str]:
    """The letter a model's answer gives or names; of duplicate choices, the first one's."""
    choices = problem.choices or []
    canon = _canonical(choices)
    letter = _letter(pred, len(choices))
    letter = canon[letter] if letter else None
    named = {canon[LETTERS[i]] for i, c in enumerate(choices) if re.search(rf"(?<!\w){re.escape(_norm(c))}(?!\w)", _norm(pred))}
    exact = {canon[LETTERS[i]] for i, c in enumerate(choices) if _norm(c) == _norm(re.sub(r"\([a-z]\)", "", pred, flags=re.IGNORECASE))}
    if letter and (named or exact) and letter not in named | exact:
        return None, f"answer {pred[:60]!r} gives letter ({letter}) but names another choice"
    if letter:
        return letter, ""
    if len(exact) == 1:
        return exact.pop(), ""
    if len(named) == 1:
        return named.pop(), ""
    return None, f"answer {pred[:60]!r} names {'several' if named else 'none'} of the choices"


def label_key(pred: str, labels: list[str]) -> tuple[str | None, str]:
    """The label an answer names: exactly ('No.'), as its first word ('no, because ...'), as a
    boolean ('true' -> yes) or once in a phrase ('it is a contradiction', not 'not entailment')."""
    norm = _norm(pred)
    lead = re.match(r"(\w+)[,.;:!]", norm)  # "no, because ...": the answer comes first
    exact: list[str | None] = [lab for lab in labels if _norm(lab) in (norm, lead and lead.group(1))] or [_truth_label(norm, labels)]
    if exact[0]:
        return exact[0], ""
    # A label counts when named, not when negated ("not entailment" names no label).
    found = [lab for lab in labels if re.search(rf"(?<!\w)(?<!\bnot )(?<!\bno ){re.escape(_norm(lab))}(?!\w)", norm)]
    # "not entailment" contains "entailment": keep only labels not inside another found label.
    found = [lab for lab in found if not any(lab != other and _norm(lab) in _norm(other) for other in found)]
    if len(found) == 1:
        return found[0], ""
    return None, f"answer {pred[:60]!r} names {'several' if found else 'none'} of the labels {labels}"


def numeric_key(pred: str) -> tuple[str | None, str]:
    value = to_number(pred)
    if value is None:
        return None, f"answer {pred[:60]!r} is not a number"
    return format_number(value), ""


def answer_key(pred: str | None, problem: Problem, cfg: DataConfig) -> tuple[str | None, str]:
    """The normalized answer (number, letter or label) that checking and voting compare."""
    if pred is None:
        return None, "no answer"
    if cfg.answer_type == "choice":
        return choice_key(pred, problem)
    if cfg.answer_type == "label":
        return label_key(pred, cfg.labels or [])
    if cfg.answer_type == "math":
        return math_key(pred)
    if cfg.answer_type not in CHECKERS:  # a plugin's checker: the answer as stated is what votes
        return pred.strip(), ""
    return numeric_key(pred)


@lru_cache(maxsize=1 << 16)
def _gold_number(answer: str) -> tuple[float | None, str]:
    """Gold answers repeat across a problem's samples: parse (and format) each once."""
    value = to_number(answer)
    return value, "" if value is None else f"{value:g}"


def _check_numeric(key: str, problem: Problem, cfg: DataConfig) -> tuple[Verdict, str]:
    gold, gold_text = _gold_number(problem.answer)
    if gold is None:
        raise UserError(f"problem {problem.id}: gold answer {problem.answer!r} is not a number or arithmetic expression")
    if math.isclose(float(key), gold, rel_tol=cfg.tolerance, abs_tol=cfg.tolerance):
        return "correct", f"{key} == {gold_text}"
    return "wrong", f"{key} != {gold_text}"


def _check_equal(key: str, problem: Problem, cfg: DataConfig) -> tuple[Verdict, str]:
    return ("correct", f"{key} == {problem.answer}") if key == problem.answer else ("wrong", f"{key} != {problem.answer}")


CHECKERS: dict[str, Callable[[str, Problem, DataConfig], tuple[Verdict, str]]] = {
    "numeric": _check_numeric,
    "choice": _check_equal,
    "label": _check_equal,
}


def check_answer(pred: str | None, problem: Problem, cfg: DataConfig) -> tuple[Verdict, str, str | None]:
    """(verdict, reason, normalized answer) with the checker of ``data.answer_type``."""
    if cfg.answer_type == "numeric" and pred is not None and problem.answer is not None:  # the hot path, inlined
        value = to_number(pred)
        if value is None:
            return "unparseable", f"answer {pred[:60]!r} is not a number", None
        number = format_number(value)
        return (*_check_numeric(number, problem, cfg), number)
    if cfg.answer_type == "math" and pred is not None:
        return check_math(pred, problem.answer)
    if cfg.answer_type not in CHECKERS and pred is not None and problem.answer is not None:
        return plugin_check(cfg.answer_type, pred, problem.answer)
    key, why = answer_key(pred, problem, cfg)
    if problem.answer is None:
        return "unlabeled", "no gold answer", key
    if key is None:
        return "unparseable", why, None
    verdict, reason = CHECKERS[cfg.answer_type](key, problem, cfg)
    return verdict, reason, key


def plugin_check(name: str, pred: str, gold: str) -> tuple[Verdict, str, str | None]:
    """A plugin checker's verdict on the stated answer, with its reason (or the verdict as reason)."""
    out = _plugin_checker(name)(pred, gold)
    verdict, reason = out if isinstance(out, tuple) else (out, "")
    if verdict not in PLUGIN_VERDICTS:
        raise UserError(
            f"checker {name!r} returned {out!r} for answer {pred[:60]!r}: expected one of {PLUGIN_VERDICTS} (or it with a reason)"
        )
    return verdict, reason or f"{verdict} by {name}", (pred.strip() if verdict != "unparseable" else None)


PLUGIN_VERDICTS = ("correct", "wrong", "unparseable")


@cache
def _plugin_checker(name: str) -> Callable:
    from llmdistill.plugins import load

    return load("checker", name)


def check_trace(trace: Trace, stop: list[str], data: DataConfig) -> FilteredTrace:
    """Parse one teacher trace into thinking, rationale and answer and check it; the verdict's
    reason and any cut of a runaway continuation are kept. ``stop``: ``prompts.answer_stops``."""
    parsed = parse_completion(trace.completion, stop, data.answer_regex)
    if parsed.answer is None:
        verdict, reason, key = ("unlabeled" if trace.answer is None else "unparseable"), parsed.reason, None
    else:
        verdict, reason, key = check_answer(parsed.answer, trace, data)  # a Trace is a Problem
    # Validated rows in, fields we computed added: no need to validate again (this runs per trace).
    return extend_row(
        FilteredTrace,
        trace,
        rationale=parsed.rationale,
        pred=parsed.answer,
        answer_key=key,
        verdict=verdict,
        majority=None,
        agreement=None,
        rejected_by=None,
        reason=reason,
        thinking=trace.reasoning or parsed.thinking,
        cut=parsed.cut,
        truncated=parsed.truncated or trace.finish_reason == "length",
    )


def majority(keys: Iterable[str | None]) -> tuple[str | None, int]:
    """The most common normalized answer and its count (None answers do not vote; ties go to the
    answer seen first): the vote of the filter, the teacher's accuracy and maj@n."""
    counts = Counter(k for k in keys if k is not None)
    return counts.most_common(1)[0] if counts else (None, 0)
