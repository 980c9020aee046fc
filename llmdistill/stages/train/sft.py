"""The SFT phase: examples for ``train.mode``, the preflight, the trainer, and its time estimate.

The examples stream: built from the kept traces as they are read, checked by the preflight,
written to ``examples.jsonl`` and, tokenized as TRL would tokenize them, to the Arrow files the
training and validation sets are memory-mapped from (``sets``), in one pass; the sets live in
``train/datasets/rank-<n>/`` (one folder a training process) until training ends. What stays in
memory is ``examples``' and ``sets``' few bytes an example. ``kd.method: offline_topk`` holds
its traces, examples and teacher rows in lists (``offline_kd``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from llmdistill.config import Config
from llmdistill.data import iter_split
from llmdistill.jsonl import RowAppender, write_rows
from llmdistill.outputs import StageRun
from llmdistill.prompts import ANSWER_SEPARATOR, PromptRenderer, answer_stops, load_prompt
from llmdistill.records import FilteredTrace, TrainExample
from llmdistill.stages.train.args import problem_batches
from llmdistill.stages.train.checkpoints import checkpoint_dir, train_and_save
from llmdistill.stages.train.examples import Preflight, build_examples, gold_labels_for_all
from llmdistill.stages.train.monitor import ValidationSet
from llmdistill.stages.train.processes import Processes, WorkerRun
from llmdistill.stages.train.sets import ExampleSets, SftRows, answer_first_rows, is_held_out
from llmdistill.stages.train.trainers import trainer_for

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


def validation_set(cfg: Config, held_out: np.ndarray, tokenizer) -> ValidationSet | None:
    """The validation problems as the student is asked them at inference, for ``select_on: accuracy``;
    ``held_out``: the validation examples' ids (``ExampleSets.validation_ids``)."""
    t = cfg.train
    if t.select_on != "accuracy" or not len(held_out):
        return None
    template = load_prompt(cfg.data.prompt)
    render = PromptRenderer(template, tokenizer, cfg.student_shots(), cfg.data.prompt_format)
    split = iter_split(cfg.data, cfg.data.train_split)
    problems = [p for p in split if p.answer is not None and is_held_out(held_out, p.id)]  # labelled only
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


def write_sets(cfg: Config, examples: Iterable[TrainExample], tokenizer, folder: Path, jsonl: Path | None) -> tuple[ExampleSets, dict]:
    """One pass over the examples: the preflight's check, the sets' rows tokenized into Arrow files in
    ``folder``, and ``jsonl`` (``examples.jsonl``: the examples trained on; None in a process that
    does not write). A preflight refusal comes before ``jsonl`` is written."""
    check = Preflight(cfg, tokenizer)
    answer_first = cfg.answer_first()
    rows = answer_first_rows(tokenizer, cfg.train.max_length) if answer_first else SftRows(tokenizer, cfg.train.max_length)
    sets = ExampleSets(folder, rows, with_task=cfg.train.mode == "step_by_step" and not answer_first)
    scratch = folder / "examples.jsonl"
    out = RowAppender(scratch, fsync=False) if jsonl is not None else None
    try:
        for e in check.kept(examples):
            sets.add(e)
            if out is not None:
                out.write([e])
    finally:
        if out is not None:
            out.close()
    report = check.report()
    if jsonl is not None:
        os.replace(scratch, jsonl)
    return sets, report


def _offline_sets(cfg: Config, traces: Iterable[FilteredTrace], examples: Iterable[TrainExample], tokenizer, student_path: str):
    """The offline top-k sets, built in memory from lists (each example's row joins its trace's teacher logprobs)."""
    from llmdistill.stages.train.offline_kd import tokenize_with_teacher

    kept, rows, report = tokenize_with_teacher(cfg, list(traces), list(examples), tokenizer, student_path)
    sets = ExampleSets(None)
    for e, row in zip(kept, rows):
        sets.add_row(e, row)
    return sets, kept, report


def run_sft(
    cfg: Config, run: StageRun | WorkerRun, procs: Processes, student_path: str, traces: Iterable[FilteredTrace], identity: dict
) -> dict:
    from llmdistill.backends.transformers import load_tokenizer

    tokenizer = load_tokenizer(student_path)
    t = cfg.train
    wants_problems = (t.mode == "label" and t.label_source == "gold") or gold_labels_for_all(t)
    problems = iter_split(cfg.data, cfg.data.train_split) if wants_problems else None
    examples = build_examples(cfg, traces, tokenizer, problems)
    folder = run.dir / "datasets" / f"rank-{procs.rank}"  # this process's sets (and TRL's caches of offline top-k rows)
    shutil.rmtree(folder, ignore_errors=True)  # never an older run's: TRL's maps are cached by fingerprint
    try:
        if cfg.kd.method == "offline_topk":
            sets, kept, report = _offline_sets(cfg, traces, examples, tokenizer, student_path)
            if procs.main:
                write_rows(run.dir / "examples.jsonl", kept)
        else:
            sets, report = write_sets(cfg, examples, tokenizer, folder, run.dir / "examples.jsonl" if procs.main else None)
        n_train, n_examples = sets.count("train"), sets.count("train") + sets.count("validation")
        ckpt, resume_from = checkpoint_dir(run.dir, "checkpoints", {**identity, "phase": "sft"}, t.resume, run.overwrite, procs)
        validation = validation_set(cfg, sets.validation_ids(), tokenizer)
        train_set, validation_examples = sets.datasets()
        prepared = cfg.kd.method != "offline_topk"  # rows as TRL prepares them: it skips its own pass (offline rows it cuts)
        trainer = trainer_for(cfg, student_path, train_set, validation_examples, str(ckpt), validation, prepared)
        del train_set, validation_examples  # the trainer holds them
        if t.preflight_probe and procs.world == 1:  # (one process's timing says little of a launch's)
            spt = probe_seconds_per_token(trainer)
            if spt:
                report["estimated_train_seconds"] = round(_estimate_seconds(cfg, report, n_train, spt), 1)
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
            t.max_length,
            f", estimated {report['estimated_train_seconds']:.0f} s" if report.get("estimated_train_seconds") else "",
        )
        out = run.dir / ("sft_model" if cfg.kd.method == "on_policy" else "model")
        stats = train_and_save(cfg, trainer, resume_from, out, identity, procs)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):  # the last process out removes datasets/
            folder.parent.rmdir()
    return {"examples": n_examples, "preflight": report, **stats}
