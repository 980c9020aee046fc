"""The one module that builds on TRL's on-policy distillation trainers (pinned: trl==1.16.0, whose
``DistillationTrainer`` internals and ``trl.experimental.gold`` changed a great deal this year).

Three teacher/student pairs (``vocab.VocabPair``), one trainer each:

- ``same``: TRL's ``DistillationTrainer`` as it is (the teacher in this process, the full
  next-token distributions compared chunk by chunk, generalized JSD with ``beta``);
- ``padded``: the same trainer with both output heads cut to the tokenizer's ids for the loss
  (``VocabSlicedTrainer``): the padding rows no token uses are left out and each side's softmax
  renormalises over the real ids, so the loss equals the unpadded pair's exactly;
- ``cross``: GOLD (``trl.experimental.gold``), Universal Logit Distillation: both tokenizations
  of the student's completion aligned by the bytes each token covers, each aligned group's
  probabilities compared sorted (a Wasserstein-1 bound that needs no shared vocabulary), and with
  ``kd.uld_hybrid`` a generalized JSD on the tokens both vocabularies spell the same way.

And a teacher on its own server (``ServerTeacherTrainer``): the student's completions are scored by
vLLM's OpenAI-compatible server, which returns the teacher's top-k log-probabilities at every
position (``prompt_logprobs``). The loss is the same generalized JSD over the partition {the
teacher's top k tokens, everything else} (``topk_divergence``): with k the whole vocabulary it is
the dense loss, and the tail bucket keeps it a true divergence for small k.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import torch

from llmdistill.stages.train.args import trl_class

log = logging.getLogger(__name__)
MASKED = -1e4  # the log-probability of a top-k slot that holds no token (finite, so no NaN reaches a gradient)


# --- the loss over a top-k partition -------------------------------------------------------------


def _kl(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the last dimension, from log-probabilities."""
    p = logp.exp()
    return (p * (logp - logq)).sum(-1)


def generalized_jsd(s_logp: torch.Tensor, t_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """TRL's divergence between student and teacher distributions (log-probabilities, last dim):
    0 forward KL(teacher || student), 1 reverse KL(student || teacher), else the generalized JSD with
    mixture ``(1 - beta) * student + beta * teacher``."""
    if beta == 0:
        return _kl(t_logp, s_logp)
    if beta == 1:
        return _kl(s_logp, t_logp)
    m = torch.logsumexp(torch.stack([s_logp + math.log(1 - beta), t_logp + math.log(beta)]), dim=0)
    return beta * _kl(t_logp, m) + (1 - beta) * _kl(s_logp, m)


def topk_divergence(s_logp: torch.Tensor, t_ids: torch.Tensor, t_logp: torch.Tensor, beta: float) -> torch.Tensor:
    """Per position, ``generalized_jsd`` over the teacher's top-k tokens plus one tail bucket.

    ``s_logp`` [..., V]: the student's log-probabilities; ``t_ids``, ``t_logp`` [..., k]: the
    teacher's top-k ids (-1: no token) and their log-probabilities under its full distribution.
    Each side's tail is the probability outside the teacher's top k."""
    valid = t_ids >= 0
    s_head = s_logp.gather(-1, t_ids.clamp(min=0)).masked_fill(~valid, MASKED)
    t_head = t_logp.float().masked_fill(~valid, MASKED)
    s_mass = torch.logsumexp(s_head, -1).exp().clamp(max=1 - 1e-6)
    t_mass = torch.logsumexp(t_head, -1).exp()
    s_tail = torch.log1p(-s_mass).unsqueeze(-1)
    t_tail = torch.log((1 - t_mass).clamp(min=1e-12)).unsqueeze(-1)
    return generalized_jsd(torch.cat([s_head, s_tail], -1), torch.cat([t_head, t_tail], -1), beta)


# --- teachers that give top-k log-probabilities ------------------------------------------------


class ServerTopK:
    """The teacher on vLLM's OpenAI-compatible server (an ``OpenAIBackend``: its retries and errors)."""

    def __init__(self, backend, top_k: int):
        self.backend, self.top_k = backend, top_k
        self.pool = ThreadPoolExecutor(max_workers=backend.concurrency)

    def __call__(self, sequences: list[list[int]], starts: list[int], width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k ids and log-probabilities [B, width, k] for the tokens of each sequence from its
        ``start`` on (the completion), -1 / 0 past its end."""
        ids = torch.full((len(sequences), width, self.top_k), -1, dtype=torch.long)
        lps = torch.zeros((len(sequences), width, self.top_k))
        for b, entries in enumerate(self.pool.map(lambda s: self.backend.prompt_logprobs(s, self.top_k), sequences)):
            for c, entry in enumerate(entries[starts[b] :]):
                if entry:
                    ids[b, c, : len(entry)] = torch.tensor(list(entry))
                    lps[b, c, : len(entry)] = torch.tensor(list(entry.values()))
        return ids, lps

    def close(self) -> None:
        self.pool.shutdown()


class LocalTopK:
    """The same top-k from a teacher model in this process (the server path's reference)."""

    def __init__(self, model, top_k: int):
        self.model, self.top_k = model, top_k

    @torch.no_grad()
    def __call__(self, sequences: list[list[int]], starts: list[int], width: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.full((len(sequences), width, self.top_k), -1, dtype=torch.long)
        lps = torch.zeros((len(sequences), width, self.top_k))
        for b, seq in enumerate(sequences):
            logits = self.model(torch.tensor([seq])).logits[0, starts[b] - 1 : len(seq) - 1].float()
            top = torch.log_softmax(logits, -1).topk(self.top_k, -1)
            ids[b, : len(top.indices)], lps[b, : len(top.values)] = top.indices, top.values
        return ids, lps


def sequences_of(inputs: dict) -> tuple[list[list[int]], list[int]]:
    """Each row's tokens without padding (prompt, then completion) and where its completion starts."""
    seqs, starts = [], []
    for p, pm, c, cm in zip(inputs["prompt_ids"], inputs["prompt_mask"], inputs["completion_ids"], inputs["completion_mask"], strict=True):
        prompt = p[pm.bool()].tolist()
        seqs.append(prompt + c[cm.bool()].tolist())
        starts.append(len(prompt))
    return seqs, starts


# --- the trainers ----------------------------------------------------------------------------------


class _Head:
    """An output head cut to the first ``n`` rows (a view: gradients reach the full weight)."""

    def __init__(self, head, n: int):
        self.weight = head.weight[:n]
        self.bias = head.bias[:n] if getattr(head, "bias", None) is not None else None


@contextmanager
def _cut_heads(models: list, n: int):
    """While the loss is computed, each model's ``get_output_embeddings()`` gives its head cut to ``n``."""
    cut = [(m, _Head(m.get_output_embeddings(), n)) for m in models]
    for m, head in cut:
        m.get_output_embeddings = lambda head=head: head  # an instance attribute shadows the method
    try:
        yield
    finally:
        for m, _ in cut:
            del m.get_output_embeddings


def vocab_sliced_trainer(**kwargs: Any):
    """TRL's ``DistillationTrainer`` with both heads cut to the tokenizer's ``shared`` ids in the loss."""
    base = trl_class("DistillationTrainer")

    class VocabSlicedTrainer(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args, teacher_model, shared: int, **kw):
            super().__init__(*args, teacher_model=None, **kw)  # TRL refuses unequal vocab sizes: the teacher is prepared here
            self.shared = shared
            self.teacher_model = self.accelerator.prepare_model(teacher_model, evaluation_mode=True)

        def _compute_loss(self, unwrapped_student, inputs, num_items_in_batch):
            teacher = self.accelerator.unwrap_model(self.teacher_model)
            with _cut_heads([unwrapped_student, teacher], self.shared):
                return super()._compute_loss(unwrapped_student, inputs, num_items_in_batch)

    return VocabSlicedTrainer(**kwargs)


def server_teacher_trainer(**kwargs: Any):
    """TRL's ``DistillationTrainer`` (the student's on-policy generation, batching, logging) with
    the teacher's side of the loss from a ``ServerTopK`` (or any top-k teacher)."""
    base = trl_class("DistillationTrainer")

    class ServerTeacherTrainer(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args, teacher, shared: int, **kw):
            super().__init__(*args, teacher_model=None, **kw)
            self.teacher, self.shared = teacher, shared
            self.diagnose = None  # a callable (student_logp, inputs, loss) for the server check script

        def _compute_loss(self, unwrapped_student, inputs, num_items_in_batch):
            input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
            attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
            mask = inputs["completion_mask"]
            width = inputs["completion_ids"].size(1)
            hidden = self._get_last_hidden_state(unwrapped_student, input_ids, attention_mask, width)
            head = _Head(unwrapped_student.get_output_embeddings(), self.shared)
            logits = torch.nn.functional.linear(hidden.to(head.weight.dtype), head.weight, head.bias).float()
            s_logp = torch.log_softmax(logits, -1)
            seqs, starts = sequences_of(inputs)
            t_ids, t_lp = self.teacher(seqs, starts, width)
            t_ids = t_ids.masked_fill(t_ids >= self.shared, -1).to(s_logp.device)  # a padding row of a served teacher: the tail
            per_token = topk_divergence(s_logp, t_ids, t_lp.to(s_logp.device), self.beta) * mask
            valid = mask.sum()
            loss = per_token.sum() / (num_items_in_batch if num_items_in_batch is not None else valid.clamp(min=1))
            entropy = -(s_logp.exp() * s_logp).sum(-1)
            if self.diagnose is not None:
                self.diagnose(s_logp.detach(), inputs, loss.detach())
            return loss, (entropy * mask).sum().detach(), valid

    return ServerTeacherTrainer(**kwargs)


def gold_trainer(*, teacher_path: str, hybrid: bool, config_kwargs: dict, **kwargs: Any):
    """GOLD's trainer for a teacher with another tokenizer: ULD on byte-aligned token groups
    (``bayesian`` merging: each group's probability by the chain rule), fully on-policy (lmbda 1)."""
    with _quiet():
        from trl.experimental.gold import GOLDConfig, GOLDTrainer

    suppress = (config_kwargs.get("generation_kwargs") or {}).get("suppress_tokens")
    args = GOLDConfig(
        **{k: v for k, v in config_kwargs.items() if k != "generation_kwargs"},
        top_p=1.0,  # the student's own distribution, as TRL's DistillationTrainer samples it
        lmbda=1.0,
        use_uld_loss=True,
        teacher_tokenizer_name_or_path=teacher_path,
        uld_token_merge_strategy="bayesian",
        uld_use_hybrid_loss=hybrid,
        uld_crossentropy_weight=0.0,
        uld_distillation_weight=1.0,
        uld_student_temperature=config_kwargs.get("temperature", 1.0),
        uld_teacher_temperature=config_kwargs.get("temperature", 1.0),
    )
    trainer = GOLDTrainer(args=args, **kwargs)
    if suppress:  # GOLD builds its generation settings itself
        trainer.generation_config.suppress_tokens = suppress
        trainer.generation_kwargs["suppress_tokens"] = suppress
    return trainer


@contextmanager
def _quiet():
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)  # "experimental API" notices
        warnings.filterwarnings("ignore", category=FutureWarning)
        yield
