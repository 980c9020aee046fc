"""Offline logit distillation: train on the teacher's own generated tokens, with its stored top-k
logprobs at every completion position (``generate.logprobs``), via ``TopKDistillTrainer``."""

from __future__ import annotations

import logging

from llmdistill.answers.reading import THINK_CLOSE, cut_runaway
from llmdistill.config import Config
from llmdistill.errors import UserError
from llmdistill.prompts import answer_stops, load_prompt
from llmdistill.records import FilteredTrace, TrainExample
from llmdistill.stages.train.examples import preflight
from llmdistill.stages.train.vocab import vocab_pair

log = logging.getLogger(__name__)


def tokens_to_keep(ids: list[int], text: str, tokenizer) -> int:
    """The fewest leading generated tokens whose decoded text covers ``text`` (the completion
    cut at its stop string): the tokens of a runaway continuation are not trained on."""
    target = len(text.rstrip())
    lo, hi = 0, len(ids)
    while lo < hi:  # decoded length grows with the prefix: binary search
        mid = (lo + hi) // 2
        if len(tokenizer.decode(ids[:mid], skip_special_tokens=True).rstrip()) >= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def one_answer(completion: str, stop: list[str]) -> str:
    """The completion up to where the filter read its one answer: a reasoning model's thinking is
    kept whole, and only the text after it is cut at a runaway continuation (as ``parse_completion`` does)."""
    close = completion.find(THINK_CLOSE)
    head, tail = (completion[: close + len(THINK_CLOSE)], completion[close + len(THINK_CLOSE) :]) if close != -1 else ("", completion)
    return head + cut_runaway(tail, stop)[0]


def tokenize_with_teacher(cfg: Config, traces: list[FilteredTrace], examples: list[TrainExample], tokenizer, student_path: str):
    """(examples, rows, preflight report): rows hold input_ids, labels (prompt masked) and the
    teacher's top-k ids/logprobs aligned with the token each position predicts."""
    pair = vocab_pair(student_path, cfg.teacher.model_name_or_path)  # the model whose logprobs were stored
    if pair.kind == "cross":
        raise UserError(
            f"kd.method 'offline_topk' with {pair.describe()}: the stored top-k are the teacher's token ids at the teacher's "
            "positions, which the student's tokenizer splits differently, so there is no distribution per student token to "
            "match; use kd.method on_policy (GOLD's ULD aligns the tokenizations by text) or a student with the teacher's tokenizer"
        )
    examples, report = preflight(cfg, examples, tokenizer)
    by_key = {(t.id, t.sample): t for t in traces}
    stop = answer_stops(load_prompt(cfg.data.prompt), cfg.data)
    eos = tokenizer.eos_token_id
    rows, kept = [], []
    skipped = 0
    for e in examples:
        tr = by_key[(e.id, e.sample)]
        if not tr.completion_ids or not tr.top_logprobs:
            skipped += 1
            continue
        if any(not isinstance(c[0], int) for step in tr.top_logprobs for c in step):
            raise UserError("kd.method 'offline_topk' needs token ids in top_logprobs: generate with the vllm or transformers backend")
        n = tokens_to_keep(tr.completion_ids, one_answer(tr.completion, stop), tokenizer)
        completion = [i for i in tr.completion_ids[:n] if i != eos]
        prompt = tokenizer(e.prompt)["input_ids"]  # as TRL tokenizes the prompts of the other objectives
        k = max(len(step) for step in tr.top_logprobs[:n]) if n else 1
        t_ids = [[-1] * k for _ in prompt]
        t_lps = [[0.0] * k for _ in prompt]
        for step in tr.top_logprobs[: len(completion)]:
            t_ids.append([c[0] for c in step] + [-1] * (k - len(step)))
            t_lps.append([float(c[1]) for c in step] + [0.0] * (k - len(step)))
        t_ids.append([-1] * k)  # EOS: cross-entropy only
        t_lps.append([0.0] * k)
        input_ids = prompt + completion + [eos]
        if len(input_ids) > cfg.train.max_length:
            if cfg.train.on_overlength == "refuse":
                raise UserError(
                    f"trace {tr.id}#{tr.sample}: {len(input_ids)} teacher tokens exceed train.max_length={cfg.train.max_length} "
                    "(raise it, or set train.on_overlength: drop)"
                )
            report["dropped_over_max_length"].append(f"{e.id}#{e.sample}:teacher tokens ({len(input_ids)} tokens)")
            report["over_max_length"] += 1
            continue
        rows.append(
            {"input_ids": input_ids, "labels": [-100] * len(prompt) + completion + [eos], "teacher_ids": t_ids, "teacher_logprobs": t_lps}
        )
        kept.append(e)
    if skipped:
        log.warning("offline_topk: %d traces have no stored token ids/logprobs and are not trained on", skipped)
    if not rows:
        raise UserError("kd.method 'offline_topk': no kept trace has stored top-k logprobs (set generate.logprobs and regenerate)")
    report["offline_topk"] = {
        "examples": len(rows),
        "without_logprobs": skipped,
        "k": max(len(r["teacher_ids"][0]) for r in rows),
        "pair": pair.kind,
        "shared_ids": pair.shared,
    }
    return kept, rows, report
