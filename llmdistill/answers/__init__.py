"""Reading and checking an answer, in one home: every stage and every model is scored by these.

- ``reading``: a completion's thinking, rationale and answer ("The answer is ...", a boxed value,
  a user's ``answer_regex``), runaway continuations cut at their stop markers;
- ``checking``: gold answers from the data (numbers, equations, choices, labels) and the verdict
  of a model's answer against them: correct, wrong, or unparseable, each with its reason;
- ``arith``: the safe arithmetic parser behind numeric answers and equations (never ``eval``);
- ``latex``: LaTeX answers checked by math-verify in a worker, under size and time limits.
"""

from llmdistill.answers.checking import answer_key, check_answer, check_trace, majority
from llmdistill.answers.reading import Parsed, Verdict, parse_completion, read_answer

__all__ = ["Parsed", "Verdict", "answer_key", "check_answer", "check_trace", "majority", "parse_completion", "read_answer"]
