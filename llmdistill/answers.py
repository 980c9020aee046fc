"""Split a completion into rationale and answer, read the answer as a number, check it.

Checking against gold lives in ``tasks`` (one checker per answer type); this module only reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from llmdistill.arith import safe_eval

Verdict = Literal["correct", "wrong", "unparseable", "unlabeled"]

# The last "the answer is ..." wins: rationales sometimes say it twice, correcting themselves.
ANSWER_IS = re.compile(
    r"(?:\b(?:so|thus|therefore|hence),?\s+)?\bthe (?:final )?answer is[:\s]*(.+?)\.?(?=\s*$|\.\s|\n)", re.IGNORECASE
)
# The same reading in two cheap steps for the usual case (see _fast_answer_is).
_TAIL = re.compile(r"answer is[:\s]*(.+?)\.?(?=\s*$|\.\s|\n)", re.IGNORECASE)
_CONNECTIVES = ("therefore", "hence", "thus", "so")
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
        i = text.find(s, 0, cut)
        if i != -1:
            cut = i
    return text if cut == len(text) else text[:cut]


def _fast_answer_is(text: str, last: int) -> tuple[int, str] | None:
    """(start, answer) of the 'the answer is ...' phrase at ``last`` without scanning for it:
    the answer read forward from there, the phrase's start (with 'the (final)' and an optional
    'so/thus/therefore/hence') read backward. None when the text does not have that shape."""
    m = _TAIL.match(text, last)
    if m is None:
        return None
    if text[max(0, last - 4) : last].lower() == "the ":
        start = last - 4
    elif text[max(0, last - 10) : last].lower() == "the final ":
        start = last - 10
    else:
        return None
    if start > 0 and text[start - 1].isalnum():  # "...bathe answer is": not the phrase
        return None
    before = text[max(0, start - 24) : start]
    core = before.rstrip()
    if len(core) < len(before):  # ",?\s+" after a connective word
        core = core[:-1] if core.endswith(",") else core
        tail = core[-9:].lower()
        if tail.endswith(_CONNECTIVES):
            word = next(w for w in _CONNECTIVES if tail.endswith(w))
            at = start - (len(before) - len(core)) - len(word)
            if at == 0 or not text[at - 1].isalnum():  # a word of its own: "so", not the end of "also"
                return at, m.group(1)
    return start, m.group(1)


def parse_completion(text: str, stop: list[str], answer_regex: str | None = None) -> Parsed:
    """Rationale and answer of a completion; ``answer_regex`` (group 1: the answer) replaces the
    default 'The answer is ...' reading, e.g. ``'####\\s*(.+)'`` for GSM8K-style outputs."""
    text = cut_at_stop(text, stop).strip()
    if answer_regex:
        found = list(re.finditer(answer_regex, text))
        if found:
            return Parsed(rationale=text[: found[-1].start()].strip(), answer=found[-1].group(1).strip())
        return Parsed(rationale=text, answer=None, reason=f"no match for data.answer_regex {answer_regex!r}")
    # The usual case is read at the last "answer is" (a fast C search) without running the regex
    # over the rationale; otherwise the regex runs over the whole text.
    last = text.lower().rfind("answer is")
    fast = _fast_answer_is(text, last) if last != -1 else None
    if fast is not None:
        return Parsed(rationale=text[: fast[0]].strip(), answer=fast[1].strip())
    m = None
    if last != -1:  # unusual text: the full regex over all of it
        for m in ANSWER_IS.finditer(text):  # keep the last
            pass
    if m:
        return Parsed(rationale=text[: m.start()].strip(), answer=m.group(1).strip())
    boxed = _BOXED.findall(text) if "\\boxed" in text else []
    if boxed:
        return Parsed(rationale=text, answer=boxed[-1].strip())
    return Parsed(rationale=text, answer=None, reason="no 'The answer is ...' in the completion")


_PLAIN = re.compile(r"-?\d+(?:\.\d+)?")


def format_number(value: float) -> str:
    """A number's normalized text, as answers are compared and trained on: '450', '2.5', '0.333333'."""
    return f"{round(value, 6):g}"


def to_number(answer: str) -> float | None:
    """Read a model's or dataset's answer: '1,234', '$1,234.00', '12.5%', '\\boxed{12}', '(10 * 45)'."""
    s = answer.strip()
    if "boxed" in s:
        boxed = _BOXED.findall(s)
        s = boxed[-1] if boxed else s
    s = s.replace("$", "").replace(",", "").replace("%", "").strip().rstrip(".")
    if _PLAIN.fullmatch(s):  # the common case, without the expression parser
        return float(s)
    s = s.replace("×", "*").replace("÷", "/")
    try:
        return safe_eval(s)
    except ValueError:
        pass
    nums = _NUMBER.findall(s)
    if len(nums) == 1:  # "42 apples", "x = 42"
        return float(nums[0].replace(",", ""))
    return None
