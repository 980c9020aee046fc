"""Split a completion into rationale and answer, read the answer as a number, check it.

Every check has three outcomes -- correct, wrong, unparseable -- and keeps its reason, so an
answer the checker cannot read is never silently counted as wrong.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from llmdistill.arith import safe_eval

Verdict = Literal["correct", "wrong", "unparseable", "unlabeled"]

# The last "the answer is ..." wins: rationales sometimes say it twice, correcting themselves.
_ANSWER_IS = re.compile(
    r"(?:(?:so|thus|therefore|hence),?\s+)?the (?:final )?answer is[:\s]*(.+?)\.?(?=\s*$|\.\s|\n)", re.IGNORECASE
)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


@dataclass
class Parsed:
    rationale: str
    answer: str | None  # the answer as written, None when there is none
    reason: str | None = None  # why there is no answer


def cut_at_stop(text: str, stop: list[str]) -> str:
    """Cut a runaway continuation (e.g. a new invented 'Q:' turn) at the first stop string."""
    cut = len(text)
    for s in stop:
        i = text.find(s)
        if i != -1:
            cut = min(cut, i)
    return text[:cut]


def parse_completion(text: str, stop: list[str]) -> Parsed:
    text = cut_at_stop(text, stop).strip()
    boxed = _BOXED.findall(text)
    matches = list(_ANSWER_IS.finditer(text))
    if matches:
        m = matches[-1]
        return Parsed(rationale=text[: m.start()].strip(), answer=m.group(1).strip())
    if boxed:
        return Parsed(rationale=text, answer=boxed[-1].strip())
    return Parsed(rationale=text, answer=None, reason="no 'The answer is ...' in the completion")


def to_number(answer: str) -> float | None:
    """Read a model's or dataset's answer: '1,234', '$1,234.00', '12.5%', '\\boxed{12}', '(10 * 45)'."""
    s = answer.strip()
    boxed = _BOXED.findall(s)
    if boxed:
        s = boxed[-1]
    s = s.replace("$", "").replace(",", "").replace("%", "").strip().rstrip(".")
    s = s.replace("×", "*").replace("÷", "/")
    try:
        return safe_eval(s)
    except ValueError:
        pass
    nums = _NUMBER.findall(s)
    if len(nums) == 1:  # "42 apples", "x = 42"
        return float(nums[0].replace(",", ""))
    return None


def check_numeric(pred: str | None, gold: str | None, tolerance: float = 1e-4) -> tuple[Verdict, str]:
    if gold is None:
        return "unlabeled", "no gold answer"
    gold_value = to_number(gold)
    if gold_value is None:
        raise ValueError(f"gold answer {gold!r} is not a number or arithmetic expression")
    if pred is None:
        return "unparseable", "no answer"
    value = to_number(pred)
    if value is None:
        return "unparseable", f"answer {pred[:60]!r} is not a number"
    if math.isclose(value, gold_value, rel_tol=tolerance, abs_tol=tolerance):
        return "correct", f"{value:g} == {gold_value:g}"
    return "wrong", f"{value:g} != {gold_value:g}"
