"""The SFT phase: examples for ``train.mode``, the preflight, the trainer, and its time estimate."""

from __future__ import annotations

import json
import logging
import time

from llmdistill.config import Config
from llmdistill.data import load_problems
from llmdistill.jsonl import write_rows
from llmdistill.outputs import StageRun
from llmdistill.prompts import ANSWER_SEPARATOR, PromptRenderer, answer_stops, load_prompt
from llmdistill.records import FilteredTrace, TrainExample
from llmdistill.stages.train.args import problem_batches
from llmdistill.stages.train.checkpoints import checkpoint_dir, train_and_save
from llmdistill.stages.train.examples import build_examples, gold_labels_for_all, preflight, tokenize_answer_first
from llmdistill.stages.train.monitor import ValidationSet
from llmdistill.stages.train.processes import Processes, WorkerRun
from llmdistill.stages.train.trainers import make_trainer

log = logging.getLogger(__name__)


def probe_seconds_per_token(trainer, n: int = 4) -> float | None:
    """Seconds per training token from one timed forward+backward on the first examples (after a
    warm-up pass); gradients are cleared and the RNG restored, so training is unchanged."""
    import torch

    ds = trainer.train_dataset
    if ds is None or len(ds) == 0:
        return None
    trainer._set_signature_columns_if_needed()
    cols = [c for c in ds.column_names if c in trainer._signature_columns]
    batch = trainer.data_collator([{k: ds[i][k] for k in cols} for i in range(min(n, len(ds)))])
    batch = trainer._prepare_inputs(batch)
    tokens = int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
    state = torch.random.get_rng_state()
    counted = getattr(trainer, "_total_train_tokens", None)  # TRL's token count: the probe is not training
    model = trainer.model
    model.train()
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        loss = trainer.compute_loss(model, dict(batch))
        loss.backward()
        times.append(time.perf_counter() - t0)
    model.zero_grad(set_to_none=True)
    torch.random.set_rng_state(state)
    trainer._metrics["train"].clear()
    if counted is not None:
        trainer._total_train_tokens = counted
    return times[-1] / max(tokens, 1)


def _estimate_seconds(cfg: Config, report: dict, n_train: int, seconds_per_token: float) -> float:
    t = cfg.train
    if t.max_steps > 0:
        per_step = t.per_device_train_batch_size * t.gradient_accumulation_steps * (2 if problem_batches(t) else 1)
        return report["train_tokens_per_epoch"] * t.max_steps * per_step / max(1, n_train) * seconds_per_token
    return report["train_tokens_per_epoch"] * t.num_train_epochs * seconds_per_token


def validation_set(cfg: Config, examples: list[TrainExample], tokenizer) -> ValidationSet | None:
    """The validation problems as the student is asked them at inference, for ``select_on: accuracy``."""
    t = cfg.train
    held_out = {e.id for e in examples if e.split == "validation"}
    if t.select_on != "accuracy" or not held_out:
        return None
    template = load_prompt(cfg.data.prompt)
    render = PromptRenderer(template, tokenizer, cfg.student_shots(), cfg.data.prompt_format)
    problems = [p for p in load_problems(cfg.data, cfg.data.train_split) if p.id in held_out and p.answer is not None]  # labelled only
    stops = answer_stops(template, cfg.data) + ([ANSWER_SEPARATOR] if cfg.answer_first() else [])  # as the student is evaluated
    tokens = t.eval_max_new_tokens or (cfg.evaluate.max_new_tokens if cfg.student_task() == "cot" else 32)
    return ValidationSet(
        prompts=[render(p.question, cfg.student_task()) for p in problems],
        problems=problems,
        data=cfg.data,
        stops=stops,
        max_new_tokens=tokens,
        batch_size=16,
    )


def run_sft(
    cfg: Config, run: StageRun | WorkerRun, procs: Processes, student_path: str, traces: list[FilteredTrace], identity: dict
) -> dict:
    from llmdistill.backends.transformers import load_tokenizer

    tokenizer = load_tokenizer(student_path)
    t = cfg.train
    wants_problems = (t.mode == "label" and t.label_source == "gold") or gold_labels_for_all(t)
    problems = load_problems(cfg.data, cfg.data.train_split) if wants_problems else None
    examples = build_examples(cfg, traces, tokenizer, problems)
    tokenized = None
    if cfg.kd.method == "offline_topk":
        from llmdistill.stages.train.offline_kd import tokenize_with_teacher

        examples, tokenized, report = tokenize_with_teacher(cfg, traces, examples, tokenizer, student_path)
    else:
        examples, report = preflight(cfg, examples, tokenizer)
        if cfg.answer_first():
            tokenized = tokenize_answer_first(examples, tokenizer)
    if procs.main:
        write_rows(run.dir / "examples.jsonl", examples)
    ckpt, resume_from = checkpoint_dir(run.dir, "checkpoints", {**identity, "phase": "sft"}, cfg.train.resume, run.overwrite, procs)
    trainer = make_trainer(cfg, student_path, examples, str(ckpt), tokenized, validation_set(cfg, examples, tokenizer))
    if cfg.train.preflight_probe and procs.world == 1:  # (one process's timing says little of a launch's)
        spt = probe_seconds_per_token(trainer)
        if spt:
            report["estimated_train_seconds"] = round(_estimate_seconds(cfg, report, sum(e.split == "train" for e in examples), spt), 1)
    if procs.main:
        (run.dir / "preflight.json").write_text(json.dumps(report, indent=2))
    log.info(
        "preflight: %d examples %s, %d training tokens per epoch, lengths p50/p95/max %s/%s/%s of max_length %d%s",
        report["examples"],
        report["by_task"],
        report["train_tokens_per_epoch"],
        report["total_tokens"].get("p50"),
        report["total_tokens"].get("p95"),
        report["total_tokens"].get("max"),
        cfg.train.max_length,
        f", estimated {report['estimated_train_seconds']:.0f} s" if report.get("estimated_train_seconds") else "",
    )
    out = run.dir / ("sft_model" if cfg.kd.method == "on_policy" else "model")
    stats = train_and_save(cfg, trainer, resume_from, out, identity, procs)
    return {"examples": len(examples), "preflight": report, **stats}
