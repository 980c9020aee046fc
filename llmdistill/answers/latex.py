"""Math answers in LaTeX (``data.answer_type: math``), checked with the math-verify library, so
``\\boxed{\\frac{3}{4}}``, ``0.75``, ``3/4``, ``\\dfrac34`` and ``$\\frac{3}{4}$`` are one answer.

Bounded like the arithmetic reader: an answer over ``MAX_CHARS`` is not parsed, parsing and the
comparison each run under ``TIME_LIMIT_S`` (math-verify's alarm, which only the main thread can
set; from another thread the check runs in a worker process under the same limit), and nothing is
``eval``-ed. What cannot be read or verified is ``unparseable`` with its reason, never a silent wrong.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import select
import subprocess
import sys
import threading
from functools import lru_cache
from pathlib import Path

from llmdistill.answers.reading import Verdict, boxed_contents
from llmdistill.errors import UnreadableGold, UserError

MAX_CHARS = 1000
TIME_LIMIT_S = 3  # per parse and per comparison; math-verify's alarm takes whole seconds
WORKER_START_S = 60  # a fresh worker process imports sympy before its first check
MISSING = "data.answer_type 'math' needs the math-verify library: pip install 'llmdistill[math]'"

_DELIMITED = ("$", "\\(", "\\[", "\\boxed")
_TEXT_CMD = re.compile(r"\\(?:text|mbox|mathrm|textbf|operatorname)\s*\{[^{}]*\}")
_WORD_RUN = re.compile(r"(?<![\\A-Za-z{])[A-Za-z]{2,}(?:\s+[A-Za-z]{2,})*(?![A-Za-z])")
_CONTRACTION = re.compile(r"[A-Za-z]'[a-z]{1,2}\b")  # "don't", "it's": a sentence, not a value
_FUNCTIONS = {
    "sin",
    "cos",
    "tan",
    "cot",
    "sec",
    "csc",
    "log",
    "ln",
    "exp",
    "sqrt",
    "arcsin",
    "arccos",
    "arctan",
    "sinh",
    "cosh",
    "tanh",
    "max",
    "min",
    "gcd",
    "lcm",
    "mod",
    "det",
    "pi",
    "infty",
}

_worker: subprocess.Popen[str] | None = None  # checks from threads other than the main one
_worker_lock = threading.Lock()


def math_verify():
    """The math-verify module, or a one-line UserError saying how to install it."""
    try:
        import math_verify as mv
    except ImportError:
        raise UserError(MISSING) from None
    return mv


def gold_math(text: str) -> str:
    """The gold answer of a MATH row: the last ``\\boxed{...}`` of a worked solution (nested braces
    included), or the answer as given (MATH-500's ``answer`` field)."""
    math_verify()  # fail at loading, not at checking, when the library is missing
    boxed = boxed_contents(text.replace("\\fbox{", "\\boxed{")) if "box" in text else []
    if boxed:
        return boxed[-1].strip()
    if len(text) > MAX_CHARS:
        raise UnreadableGold(f"gold answer {text[:60]!r}... has no \\boxed{{...}} and is too long to be an answer")
    return text.strip()


def _latex(text: str) -> str:
    """The answer as math-verify reads it best: math delimited; bare words ('18.90 dollars',
    'no solution') as ``\\text{...}``, which it treats as units or a named answer."""
    text = text.strip().replace("\\$", "")
    if any(d in text for d in _DELIMITED):
        return text
    if _TEXT_CMD.search(text):  # words already marked as text
        return f"${text}$"
    return "$" + _WORD_RUN.sub(lambda m: m.group(0) if m.group(0).lower() in _FUNCTIONS else f"\\text{{{m.group(0)}}}", text) + "$"


def _prose(text: str) -> bool:
    """Whether an undelimited answer is a sentence ('I don't know', 'it cannot be done'), not a value."""
    if any(d in text for d in _DELIMITED):
        return False
    words = [w for run in _WORD_RUN.findall(_TEXT_CMD.sub("", text)) for w in run.split() if w.lower() not in _FUNCTIONS]
    return len(words) >= 3 or bool(_CONTRACTION.search(text))


def _key(value) -> str:
    """The parsed value as voting compares it: decimals as exact fractions, so '0.75' and '3/4'
    agree, and 'x = -4' as its value, as math-verify compares it with '-4'."""
    import sympy

    if isinstance(value, sympy.Eq) and isinstance(value.lhs, sympy.Symbol):
        value = value.rhs
    if isinstance(value, sympy.Basic) and value.atoms(sympy.Float):
        value = value.xreplace({f: sympy.Rational(str(f)) for f in value.atoms(sympy.Float)})
    return str(value)


@lru_cache(maxsize=1 << 14)
def _parse(text: str) -> tuple[str | None, str, tuple]:
    """(key, why not, parsed values) of one answer; a gold answer repeats across samples: parsed once."""
    mv = math_verify()
    if len(text) > MAX_CHARS:
        return None, f"answer too long to verify ({len(text)} chars > {MAX_CHARS})", ()
    if _prose(text):
        return None, f"answer {text[:60]!r} is a sentence, not a math answer", ()
    try:
        parsed = mv.parse(_latex(text), fallback_mode="no_fallback", parsing_timeout=TIME_LIMIT_S, raise_on_error=True)
        return (_key(parsed[0]), "", tuple(parsed)) if parsed else (None, f"answer {text[:60]!r} is not math that math-verify reads", ())
    except mv.errors.TimeoutException:
        return None, f"cannot parse {text[:60]!r} within {TIME_LIMIT_S} s", ()
    except Exception as e:  # a parser failure on odd input is that input's problem, not the run's
        return None, f"cannot parse {text[:60]!r} as math ({type(e).__name__})", ()


def _check(pred: str, gold: str | None) -> tuple[Verdict, str, str | None]:
    """The check itself, in a thread that can set math-verify's alarm."""
    key, why, parsed = _parse(pred)
    if gold is None:
        return "unlabeled", why or "no gold answer", key
    if key is None:
        return "unparseable", why, None
    gold_key, gold_why, gold_parsed = _parse(gold)
    if gold_key is None:
        return "unparseable", f"cannot verify against the gold answer: {gold_why}", key
    mv = math_verify()
    try:
        same = mv.verify(list(gold_parsed), list(parsed), timeout_seconds=TIME_LIMIT_S, raise_on_error=True)
    except mv.errors.TimeoutException:
        return "unparseable", f"cannot verify {key[:60]} against {gold_key[:60]} within {TIME_LIMIT_S} s", key
    except Exception as e:
        return "unparseable", f"cannot verify {key[:60]} against {gold_key[:60]} ({type(e).__name__})", key
    return ("correct", f"{key} == {gold_key}", key) if same else ("wrong", f"{key} != {gold_key}", key)


def _in_worker(pred: str, gold: str | None) -> tuple[Verdict, str, str | None]:
    """Off the main thread math-verify cannot set its alarm: the check runs in a worker process
    (``python -m llmdistill.answers.latex``, in its main thread, under the same limits); a worker
    that overruns them is ended and the answer is unparseable, with the reason."""
    global _worker
    with _worker_lock:
        fresh = _worker is None or _worker.poll() is not None
        if fresh:
            path = [str(Path(__file__).parents[1]), *filter(None, [os.environ.get("PYTHONPATH")])]
            _worker = subprocess.Popen(
                [sys.executable, "-m", "llmdistill.answers.latex"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(path)},
            )
        worker = _worker
        assert worker is not None and worker.stdin is not None and worker.stdout is not None  # started above, piped
        try:
            worker.stdin.write(json.dumps([pred, gold]) + "\n")
            worker.stdin.flush()
            ready, _, _ = select.select([worker.stdout], [], [], 3 * TIME_LIMIT_S + 2 + (WORKER_START_S if fresh else 0))
            verdict, reason, key = json.loads(worker.stdout.readline() if ready else "")
            return verdict, reason, key
        except (OSError, ValueError):  # no reply in time, or the worker died
            worker.kill()
            worker.wait()
            _worker = None
            return "unparseable", f"cannot verify {pred[:60]!r} within the time limit (worker process)", None


@atexit.register
def _stop_worker() -> None:
    """End the worker with the process that started it (it also ends when its input closes)."""
    if _worker is not None and _worker.poll() is None:
        if _worker.stdin is not None:  # always piped
            _worker.stdin.close()
        try:
            _worker.wait(timeout=1)
        except subprocess.TimeoutExpired:
            _worker.kill()


def _serve() -> None:
    """The worker's loop: one JSON ``[pred, gold]`` per line in, one ``[verdict, reason, key]`` out."""
    out, sys.stdout = sys.stdout, sys.stderr  # whatever a library prints stays out of the replies
    for line in sys.stdin:
        pred, gold = json.loads(line)
        out.write(json.dumps(_check(pred, gold)) + "\n")
        out.flush()


@lru_cache(maxsize=1 << 14)
def check_math(pred: str, gold: str | None) -> tuple[Verdict, str, str | None]:
    """(verdict, reason, key) of a model's answer against a gold LaTeX answer; ``key`` is the
    parsed value's normalized text, which voting compares. ``gold`` None: unlabeled."""
    math_verify()
    if threading.current_thread() is threading.main_thread():
        return _check(pred, gold)
    return _in_worker(pred, gold)


def math_key(pred: str) -> tuple[str | None, str]:
    """The normalized parsed value of an answer (for voting), or None and why it cannot be read."""
    _, why, key = check_math(pred, None)
    return key, "" if key is not None else why


if __name__ == "__main__":
    _serve()
