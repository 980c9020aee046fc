"""Which teacher/student pairs logit distillation can compare, and over which token ids.

- ``same``: one tokenizer, the same number of embedding rows: distributions compared as they are.
- ``padded``: one tokenizer, different embedding rows (Qwen2.5-7B..72B have 152,064 rows, 0.5B..3B
  151,936, for one tokenizer of 151,665 ids). The rows past the tokenizer's ids are padding no
  token uses: both sides are cut to the tokenizer's ids (``shared``) and renormalised there.
- ``cross``: different tokenizers (a Llama or Qwen teacher, a SmolLM2 student). Positions do not
  line up and ids mean different strings: on-policy distillation aligns the two tokenizations by
  the text they cover (TRL's GOLD, Universal Logit Distillation); offline top-k is refused, since
  its stored top-k are over the teacher's ids at the teacher's positions.

Checked before any training step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llmdistill.errors import UserError


@dataclass(frozen=True)
class VocabPair:
    kind: Literal["same", "padded", "cross"]
    shared: int  # same/padded: the token ids both sides are compared over; cross: 0
    student_rows: int | None
    teacher_rows: int | None  # None: no model config (a served teacher)

    def describe(self) -> str:
        rows = f"student {self.student_rows} rows, teacher {self.teacher_rows if self.teacher_rows is not None else '(served)'}"
        if self.kind == "cross":
            return f"different tokenizers ({rows})"
        return f"one tokenizer of {self.shared} ids ({rows})"


def _rows(path: str) -> int | None:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path).get_text_config().vocab_size
    except (OSError, ValueError):
        return None  # no model config here (a served teacher's name): its tokenizer is what counts


def token_ids(tokenizer) -> int:
    """The number of ids the tokenizer can produce (its largest id + 1, added tokens included)."""
    return max(tokenizer.get_vocab().values()) + 1


def vocab_pair(student_path: str, teacher_path: str) -> VocabPair:
    from llmdistill.backends.transformers import load_tokenizer

    s_tok, t_tok = load_tokenizer(student_path), load_tokenizer(teacher_path)
    s_rows, t_rows = _rows(student_path), _rows(teacher_path)
    if s_tok.get_vocab() != t_tok.get_vocab():
        return VocabPair("cross", 0, s_rows, t_rows)
    ids = token_ids(s_tok)
    for who, rows, path in (("student", s_rows, student_path), ("teacher", t_rows, teacher_path)):
        if rows is not None and rows < ids:
            raise UserError(
                f"the {who} ({path}) has {rows} embedding rows for a tokenizer of {ids} ids: its model and tokenizer do not match"
            )
    kind: Literal["same", "padded"] = "same" if s_rows == t_rows or t_rows is None else "padded"
    return VocabPair(kind, ids, s_rows, t_rows)
