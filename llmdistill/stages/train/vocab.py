"""Logit distillation compares next-token distributions token by token: the teacher and the
student must share one tokenizer and vocabulary. Checked before any training step."""

from __future__ import annotations

from llmdistill.errors import UserError


def check_same_vocab(student_path: str, teacher_path: str) -> None:
    from transformers import AutoConfig

    from llmdistill.backends.transformers import load_tokenizer

    s_tok, t_tok = load_tokenizer(student_path), load_tokenizer(teacher_path)
    s_vocab, t_vocab = s_tok.get_vocab(), t_tok.get_vocab()
    if s_vocab != t_vocab:
        differ = sum(1 for k, v in t_vocab.items() if s_vocab.get(k) != v) + len(set(s_vocab) - set(t_vocab))
        raise UserError(
            f"logit distillation needs one shared vocabulary, but the student's tokenizer ({student_path}, {len(s_vocab)} tokens) "
            f"and the teacher's ({teacher_path}, {len(t_vocab)} tokens) differ in {differ} entries: use a student from the "
            "teacher's family (e.g. student.init: pruned) or kd.method: none"
        )
    try:
        s_size = AutoConfig.from_pretrained(student_path).get_text_config().vocab_size
        t_size = AutoConfig.from_pretrained(teacher_path).get_text_config().vocab_size
    except (OSError, ValueError):
        return  # no model config (e.g. a served teacher): the tokenizers agree, which is what offline KD needs
    if s_size != t_size:
        raise UserError(
            f"the student's embedding has {s_size} rows and the teacher's {t_size}: logit distillation needs the same vocab_size"
        )
