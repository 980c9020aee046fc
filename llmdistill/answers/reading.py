"""Split a completion into thinking, rationale and answer, and read the answer as a number.

A completion is one answer. A reasoning model's ``<think> ... </think>`` is its thinking (one that
never closes was cut off: truncated, not an answer). A runaway continuation -- an invented next
example, in the prompt's format or the data's own -- is cut at a stop marker, or after the first
answer statement that a blank line and more text follow; the cut is recorded, never silent.
Inside one answer the last "the answer is" wins (a model may correct itself). Checking against
gold lives in ``tasks`` (one checker per answer type); this module only reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from llmdistill.answers.arith import safe_eval

Verdict = Literal["correct", "wrong", "unparseable", "unlabeled"]

# The last "the answer is ..." wins: rationales sometimes say it twice, correcting themselves.
# An abbreviation's period ("Rs. 1500", "approx. 3") does not end the answer; a sentence's does.
ANSWER_IS = re.compile(
    r"(?:\b(?:so|thus|therefore|hence),?\s+)?\bthe (?:final )?answer is[:\s]*(.+?)\.?(?=\s*$|(?<!\brs)(?<!\bmr)(?<!\bmrs)(?<!\bdr)(?<!\bapprox)\.\s|\n)",
    re.IGNORECASE,
)
# The same reading in two cheap steps for the usual case (see _fast_answer_is).
_TAIL = re.compile(r"answer is[:\s]*(.+?)\.?(?=\s*$|(?<!\brs)(?<!\bmr)(?<!\bmrs)(?<!\bdr)(?<!\bapprox)\.\s|\n)", re.IGNORECASE)
_CONNECTIVES = ("therefore", "hence", "thus", "so")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


_BLANK_THEN_MORE = re.compile(r"[ \t]*\n[ \t]*\n\s*\S")
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


@dataclass
class Parsed:
    rationale: str
    answer: str | None  # the answer as written, None when there is none
    reason: str | None = None  # why there is no answer
    thinking: str | None = None  # a reasoning model's thinking, between <think> and </think>
    cut: str | None = None  # where and why a runaway continuation was cut off
    truncated: bool = False  # the thinking never closed: the generation stopped inside it


def boxed_contents(text: str) -> list[str]:
    """The contents of every ``\\boxed{...}``, nested braces included (``\\boxed{\\frac{3}{4}}``)."""
    out, start = [], text.find("\\boxed{")
    while start != -1:
        i, depth = start + len("\\boxed{"), 1
        j = i
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        if depth == 0:
            out.append(text[i : j - 1])
        start = text.find("\\boxed{", j)
    return out


def split_thinking(text: str) -> tuple[str | None, str, bool]:
    """(thinking, the text after it, closed). A completion may start inside the thinking (the
    chat template opened ``<think>``), so a lone ``</think>`` also ends one."""
    close = text.find(THINK_CLOSE)
    open_ = text.find(THINK_OPEN)
    if close == -1:
        if open_ == -1:
            return None, text, True
        return text[open_ + len(THINK_OPEN) :].strip(), "", False
    begin = open_ + len(THINK_OPEN) if -1 < open_ < close else 0
    return text[begin:close].strip(), text[close + len(THINK_CLOSE) :], True


def cut_runaway(text: str, stop: list[str]) -> tuple[str, str | None]:
    """The completion up to where its one answer ends, and why it was cut (None if whole): at the
    first stop marker, or after the first answer statement followed by a blank line and more text."""
    kept = cut_at_stop(text, stop)
    why = None
    if len(kept) < len(text):
        marker = next(s for s in stop if text.startswith(s, len(kept)))
        why = f"at {marker!r} ({len(text) - len(kept)} chars cut)"
    low = kept.lower()
    i = low.find("answer is")
    while i != -1:
        m = _TAIL.match(kept, i)
        if m and _BLANK_THEN_MORE.match(kept, m.end()):
            why = f"after the first answer statement, at a blank line and more text ({len(text) - m.end()} chars cut)"
            return kept[: m.end()], why
        i = low.find("answer is", i + 9)
    return kept, why


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
    """Thinking, rationale and answer of a completion; ``answer_regex`` (group 1: the answer)
    replaces the default 'The answer is ...' reading, e.g. ``'####\\s*(.+)'`` for GSM8K-style outputs.
    ``stop``: the markers where an invented next example starts (see ``prompts.answer_stops``)."""
    thinking = None
    if THINK_OPEN in text or THINK_CLOSE in text:
        thinking, text, closed = split_thinking(text)
        if not closed:
            return Parsed(
                rationale="",
                answer=None,
                reason="truncated: the thinking never ends (<think> without </think>)",
                thinking=thinking,
                truncated=True,
            )
    text, cut = cut_runaway(text, stop)
    parsed = read_answer(text.strip(), answer_regex)
    parsed.thinking, parsed.cut = thinking, cut
    return parsed


def read_answer(text: str, answer_regex: str | None = None) -> Parsed:
    """Rationale and answer of one answer's text (already cut): the last "the answer is" wins."""
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
    if last != -1:  # unusual text: the full regex over all of it; the last match wins
        m = next(reversed(list(ANSWER_IS.finditer(text))), None)
    if m:
        return Parsed(rationale=text[: m.start()].strip(), answer=m.group(1).strip())
    boxed = boxed_contents(text) if "\\boxed" in text else []
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
        boxed = boxed_contents(s)
        s = boxed[-1] if boxed else s
    s = s.replace("$", "").replace(",", "").replace("%", "").strip().rstrip(".")
    if _PLAIN.fullmatch(s):  # the common case, without the expression parser
        return float(s)
    s = s.replace("×", "*").replace("÷", "/")
    try:
        return safe_eval(s)
    except ValueError:
        pass
    nums = _NUMBER.findall(re.sub(r"^(?:rs|inr|usd|eur)\.?\s*", "", s, flags=re.IGNORECASE))  # "Rs.1500": not ".1500"
    if len(nums) == 1:  # "42 apples", "x = 42"
        return float(nums[0].replace(",", ""))
    return None
