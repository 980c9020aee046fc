"""Training losses as plain tensor functions, tested against hand-computed references.

- ``per_example_mean``: each example's mean token loss over its completion tokens.
- ``step_by_step_loss``: ``alpha * L_label + (1 - alpha) * L_rationale``, each L the mean of the
  per-example losses of that task's examples in the batch (not a mean over all tokens, where long
  rationales would swamp the one-line labels).
- ``topk_kl``: KL(teacher || student) per token from the teacher's top-k logprobs, with the
  teacher's tail mass (the probability outside its top k) matched against the student's tail, so
  it equals the dense KL when k is the vocabulary size.
"""

from __future__ import annotations

import torch

LABEL, RATIONALE = 0, 1  # task ids carried by step-by-step batches


def per_example_mean(token_loss: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, T] token losses and 0/1 mask -> [B] mean loss over each example's masked tokens."""
    mask = mask.to(token_loss.dtype)
    return (token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def step_by_step_loss(example_loss: torch.Tensor, task: torch.Tensor, alpha: float) -> torch.Tensor:
    """``alpha * mean(label example losses) + (1 - alpha) * mean(rationale example losses)``.

    A task absent from the batch contributes nothing (its weight is not moved to the other task).
    """
    total = example_loss.new_zeros(())
    for task_id, weight in ((LABEL, alpha), (RATIONALE, 1.0 - alpha)):
        chosen = task == task_id
        if weight > 0 and chosen.any():
            total = total + weight * example_loss[chosen].mean()
    return total


def topk_kl(
    student_logits: torch.Tensor, teacher_ids: torch.Tensor, teacher_logprobs: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """Per-position KL(teacher || student) over the teacher's top-k tokens plus one tail bucket.

    ``student_logits`` [..., V]; ``teacher_ids`` [..., k] (long); ``teacher_logprobs`` [..., k]: the
    teacher's log-probabilities of those tokens under its full distribution (so they sum to at most
    1). With P the teacher's top-k probabilities, Q the student's at the same ids, and tails
    ``1 - sum P`` and ``1 - sum Q``::

        KL = sum_i P_i (log P_i - log Q_i) + P_tail (log P_tail - log Q_tail)

    Padded entries (id < 0) are ignored. Returns [...] per position.
    """
    logq_all = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    valid = teacher_ids >= 0
    ids = teacher_ids.clamp(min=0)
    logq = logq_all.gather(-1, ids)
    logp = teacher_logprobs.float()
    p = logp.exp() * valid
    head = (p * (logp - logq) * valid).sum(-1)
    p_tail = (1.0 - p.sum(-1)).clamp(min=0.0)
    q_head = (logq.exp() * valid).sum(-1)
    log_q_tail = torch.log1p(-q_head.clamp(max=1.0 - 1e-6))
    tail = torch.where(p_tail > 1e-6, p_tail * (torch.log(p_tail.clamp(min=1e-12)) - log_q_tail), torch.zeros_like(p_tail))
    return head + tail


def answer_first_loss(token_logp: torch.Tensor, label_mask: torch.Tensor, answer_len: torch.Tensor, alpha: float) -> torch.Tensor:
    """``alpha * mean(answer losses) + (1 - alpha) * mean(rationale losses)`` for answer-first
    sequences: each example's first ``answer_len`` completion tokens are its answer, the rest
    (separator, rationale, EOS) its rationale; each part is a per-example mean, then averaged over
    the examples that have it. ``token_logp``, ``label_mask``: [B, T]; ``answer_len``: [B]."""
    mask = label_mask.bool()
    position = mask.long().cumsum(-1)  # 1-based index among the completion tokens
    answer = mask & (position <= answer_len[:, None])
    rationale = mask & (position > answer_len[:, None])
    task = torch.cat([torch.full_like(answer_len, LABEL), torch.full_like(answer_len, RATIONALE)])
    losses = torch.cat([per_example_mean(-token_logp, answer), per_example_mean(-token_logp, rationale)])
    present = torch.cat([answer.any(-1), rationale.any(-1)])
    return step_by_step_loss(losses[present], task[present], alpha)
