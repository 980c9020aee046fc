"""Stage 3, train: fine-tune the student on the kept traces with TRL's ``SFTTrainer``.

``train.mode`` picks the objective (``label``, ``cot``, ``step_by_step``; see ``train_data``);
``kd.method`` adds logit distillation: ``offline_topk`` on the teacher's stored top-k logprobs,
or ``on_policy`` (TRL ``DistillationTrainer``) after the SFT or instead of it. Before any step a
preflight checks lengths against ``max_length`` and estimates the time; checkpoints of an
unchanged config are resumed; the saved student is a plain HF folder with a model card.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
import warnings
from pathlib import Path

from llmdistill.config import Config
from llmdistill.data import load_problems
from llmdistill.errors import UserError
from llmdistill.jsonl import read_rows, write_rows
from llmdistill.records import FilteredTrace, TrainExample
from llmdistill.stage import StageRun, read_stats, require_complete
from llmdistill.student import materialize_student
from llmdistill.train_data import build_examples, preflight

log = logging.getLogger(__name__)

MARKER = "llmdistill-run.json"  # in a checkpoint folder: the config and upstream run it belongs to


def _sft_config(cfg: Config, output_dir: str, has_validation: bool):
    import torch
    from trl import SFTConfig

    t = cfg.train
    cuda = torch.cuda.is_available()
    save_steps = t.save_steps
    if has_validation:  # the best checkpoint needs saving at evaluation steps
        save_steps = t.eval_steps * max(1, math.ceil(save_steps / t.eval_steps)) if save_steps else t.eval_steps
    return SFTConfig(
        output_dir=output_dir,
        learning_rate=t.learning_rate,
        num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        gradient_checkpointing=t.gradient_checkpointing,
        max_length=t.max_length,
        packing=t.packing,
        warmup_steps=t.warmup_steps,
        lr_scheduler_type=t.lr_scheduler_type,
        weight_decay=t.weight_decay,
        logging_steps=t.logging_steps,
        seed=t.seed,
        completion_only_loss=True,
        bf16=cuda and torch.cuda.is_bf16_supported(),
        use_cpu=not cuda,
        eval_strategy="steps" if has_validation else "no",
        eval_steps=t.eval_steps if has_validation else None,
        save_strategy="steps" if save_steps else "no",
        save_steps=save_steps or 500,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=has_validation,
        metric_for_best_model="eval_loss" if has_validation else None,
        greater_is_better=False if has_validation else None,
        report_to=[],
        disable_tqdm=False,
        dataloader_pin_memory=cuda,
    )


def _lora_config(cfg: Config):
    if cfg.train.lora is None:
        return None
    from peft import LoraConfig

    lo = cfg.train.lora
    return LoraConfig(r=lo.r, lora_alpha=lo.alpha, lora_dropout=lo.dropout, target_modules=lo.target_modules, task_type="CAUSAL_LM")


def _dataset(rows: list[dict]):
    import datasets

    return datasets.Dataset.from_list(rows) if rows else None


def _rows(examples: list[TrainExample], split: str, with_task: bool) -> list[dict]:
    rows, groups = [], {}
    for e in examples:
        if e.split != split:
            continue
        row = {"prompt": e.prompt, "completion": e.completion}
        if with_task:
            row["task"] = 0 if e.task == "label" else 1
            row["group"] = groups.setdefault((e.id, e.sample), len(groups))
        rows.append(row)
    return rows


def make_trainer(cfg: Config, student_path: str, examples: list[TrainExample], output_dir: str, tokenized: list[dict] | None = None):
    """The trainer for ``train.mode`` / ``kd.method``: plain ``SFTTrainer`` (label, cot), the
    step-by-step trainer, or the offline top-k trainer over pre-tokenized rows (``tokenized``)."""
    from transformers import AutoModelForCausalLM

    from llmdistill.backends.hf import load_tokenizer

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TRL currently supports vLLM")
        from trl import SFTTrainer

    from llmdistill.trainers import StepByStepTrainer, TopKDistillTrainer

    tokenizer = load_tokenizer(student_path)
    model = AutoModelForCausalLM.from_pretrained(student_path, dtype="float32")
    if tokenized is not None:
        train_rows = [r for r, e in zip(tokenized, examples) if e.split == "train"]
        eval_rows = [r for r, e in zip(tokenized, examples) if e.split == "validation"]
    else:
        with_task = cfg.train.mode == "step_by_step"
        train_rows, eval_rows = _rows(examples, "train", with_task), _rows(examples, "validation", with_task)
    kwargs = dict(model=model, args=_sft_config(cfg, output_dir, bool(eval_rows)), train_dataset=_dataset(train_rows),
                  eval_dataset=_dataset(eval_rows), processing_class=tokenizer, peft_config=_lora_config(cfg))
    if tokenized is not None:
        return TopKDistillTrainer(**kwargs, lam=cfg.kd.lam)
    if cfg.train.mode == "step_by_step":
        return StepByStepTrainer(**kwargs, alpha=cfg.train.alpha)
    return SFTTrainer(**kwargs)


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
    return times[-1] / max(tokens, 1)


def _checkpoint_dir(run_dir: Path, name: str, identity: dict, resume: bool) -> tuple[Path, str | None]:
    """A checkpoint folder for this config and upstream run, and the checkpoint to resume from."""
    from transformers.trainer_utils import get_last_checkpoint

    path = run_dir / name
    marker = path / MARKER
    if resume and marker.is_file() and json.loads(marker.read_text()) == identity:
        last = get_last_checkpoint(str(path))
        if last:
            log.info("resuming from %s", last)
        return path, last
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    marker.write_text(json.dumps(identity))
    return path, None


def _save(trainer, out: Path, merge: bool) -> None:
    """Save the student (LoRA merged into the weights unless ``merge`` is off) atomically."""
    from peft import PeftModel

    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model = trainer.model
    if isinstance(model, PeftModel) and merge:
        model = model.merge_and_unload()
    model.save_pretrained(str(tmp))
    trainer.processing_class.save_pretrained(str(tmp))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def _phase_stats(trainer, result, seconds: float) -> dict:
    history = trainer.state.log_history
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    logged = [h["num_tokens"] for h in history if "num_tokens" in h and "loss" in h]
    tokens = trainer.state.num_input_tokens_seen or (logged[-1] if logged else 0)
    if not tokens and "input_ids" in (trainer.train_dataset.column_names or []):
        tokens = int(sum(len(x) for x in trainer.train_dataset["input_ids"]) * result.metrics.get("epoch", 1.0))
    # (after a resume these count the whole run; tokens/s below then overstates this segment's speed)
    return {
        "steps": result.global_step,
        "train_loss": round(result.training_loss, 4),
        "best_eval_loss": round(min(evals), 4) if evals else None,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "train_seconds": round(seconds, 2),
        "tokens_seen": int(tokens),
        "tokens_per_s": round(tokens / max(seconds, 1e-9), 1),
        "log_history": history,
    }


def run_sft(cfg: Config, run: StageRun, student_path: str, traces: list[FilteredTrace], identity: dict) -> dict:
    from llmdistill.backends.hf import load_tokenizer

    tokenizer = load_tokenizer(student_path)
    problems = load_problems(cfg.data, cfg.data.train_split) if cfg.train.mode == "label" and cfg.train.label_source == "gold" else None
    examples = build_examples(cfg, traces, tokenizer, problems)
    tokenized = None
    if cfg.kd.method == "offline_topk":
        from llmdistill.offline_kd import tokenize_with_teacher

        examples, tokenized, report = tokenize_with_teacher(cfg, traces, examples, tokenizer, student_path)
    else:
        examples, report = preflight(cfg, examples, tokenizer)
    write_rows(run.dir / "examples.jsonl", examples)
    ckpt, resume_from = _checkpoint_dir(run.dir, "checkpoints", {**identity, "phase": "sft"}, cfg.train.resume)
    trainer = make_trainer(cfg, student_path, examples, str(ckpt), tokenized)
    if cfg.train.preflight_probe:
        spt = probe_seconds_per_token(trainer)
        if spt:
            steps_tokens = report["train_tokens_per_epoch"] * (cfg.train.num_train_epochs if cfg.train.max_steps < 0 else 1)
            if cfg.train.max_steps > 0:
                per_step = cfg.train.per_device_train_batch_size * cfg.train.gradient_accumulation_steps
                n_train = max(1, sum(e.split == "train" for e in examples))
                steps_tokens = report["train_tokens_per_epoch"] * cfg.train.max_steps * per_step / n_train
            report["estimated_train_seconds"] = round(steps_tokens * spt, 1)
    (run.dir / "preflight.json").write_text(json.dumps(report, indent=2))
    log.info("preflight: %d examples %s, %d training tokens per epoch, lengths p50/p95/max %s/%s/%s of max_length %d%s",
             report["examples"], report["by_task"], report["train_tokens_per_epoch"], report["total_tokens"].get("p50"),
             report["total_tokens"].get("p95"), report["total_tokens"].get("max"), cfg.train.max_length,
             f", estimated {report['estimated_train_seconds']:.0f} s" if report.get("estimated_train_seconds") else "")
    t0 = time.time()
    result = trainer.train(resume_from_checkpoint=resume_from)
    stats = _phase_stats(trainer, result, time.time() - t0)
    stats["resumed_from"] = resume_from
    out = run.dir / ("sft_model" if cfg.kd.method == "on_policy" else "model")
    _save(trainer, out, cfg.train.lora is None or cfg.train.lora.merge)
    (out / MARKER).write_text(json.dumps(identity))
    return {"examples": len(examples), "preflight": report, **stats}


def train(cfg: Config) -> dict:
    require_complete(cfg, "filter")
    with StageRun(cfg, "train") as run:
        traces = read_rows(cfg.stage_dir("filter") / "kept.jsonl", FilteredTrace)
        if not traces and not (cfg.train.mode == "label" and cfg.train.label_source == "gold"):
            raise UserError(f"{cfg.stage_dir('filter') / 'kept.jsonl'} is empty: the filter kept no traces to train on")
        student_path = materialize_student(cfg)
        identity = {"config_hash": cfg.stage_hash("train"), "upstream_run_id": (read_stats(cfg, "filter") or {}).get("run_id")}
        stats: dict = {"mode": cfg.train.mode, "kd": cfg.kd.method, "student_init": student_path}
        sft_done = run.dir / "sft_model" / MARKER
        if cfg.kd.method == "on_policy" and not cfg.kd.after_sft:
            start = student_path
        elif cfg.kd.method == "on_policy" and sft_done.is_file() and json.loads(sft_done.read_text()) == identity:
            log.info("SFT already done for this config: %s", sft_done.parent)
            start, stats["sft"] = str(sft_done.parent), {"reused": True}
        else:
            stats["sft"] = run_sft(cfg, run, student_path, traces, identity)
            start = str(run.dir / "sft_model")
        if cfg.kd.method == "on_policy":
            from llmdistill.onpolicy import run_on_policy

            stats["kd"] = run_on_policy(cfg, run, start, traces, identity)
        final = stats.get("kd") if isinstance(stats.get("kd"), dict) else stats["sft"]
        stats.update({k: final.get(k) for k in ("steps", "train_loss", "tokens_seen", "tokens_per_s", "best_eval_loss")})
        stats["examples"] = (stats.get("sft") or {}).get("examples") or final.get("examples")
        from llmdistill.modelcard import write_model_card

        write_model_card(cfg, run.dir / "model", stats)
        return run.finish(stats)
