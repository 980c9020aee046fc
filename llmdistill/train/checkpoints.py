"""Checkpoint folders that a rerun of the same config resumes, and the saved student.

Each training phase (SFT, on-policy KD) checkpoints into its own folder, marked with the config
hash and upstream run it belongs to; a rerun with the same identity resumes from the newest
checkpoint. The student is saved whole or not at all.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from llmdistill.atomic import atomic_dir
from llmdistill.stage import move_aside, refusal

log = logging.getLogger(__name__)

MARKER = "llmdistill-run.json"  # in a checkpoint or model folder: the config and upstream run it belongs to


def checkpoint_dir(run_dir: Path, name: str, identity: dict, resume: bool, overwrite: bool = False) -> tuple[Path, str | None]:
    """A checkpoint folder for this config and upstream run, and the checkpoint to resume from.

    Checkpoints of another identity (content settings or upstream run) are refused, or moved
    aside with ``overwrite``; with ``train.resume: false`` this config's own are moved aside.
    """
    from transformers.trainer_utils import get_last_checkpoint

    path = run_dir / name
    marker = path / MARKER
    if marker.is_file():
        mine = json.loads(marker.read_text()) == identity
        if mine and resume:
            last = get_last_checkpoint(str(path))
            if last:
                log.info("resuming from %s", last)
            return path, last
        if not mine and not overwrite:
            raise refusal(f"{path} holds checkpoints of another training run", ["other content settings or another filter output"])
        move_aside(path)
    elif path.exists() and any(path.iterdir()):
        move_aside(path)  # unmarked leftovers (a run killed before its first marker)
    path.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(identity))
    return path, None


def is_saved(model_dir: Path, identity: dict) -> bool:
    marker = model_dir / MARKER
    return marker.is_file() and json.loads(marker.read_text()) == identity


def save_model(trainer, out: Path, merge: bool, identity: dict | None = None) -> None:
    """Save the student (LoRA merged into the weights unless ``merge`` is off) atomically."""
    from peft import PeftModel

    model = trainer.model
    if isinstance(model, PeftModel) and merge:
        model = model.merge_and_unload()
    with atomic_dir(out) as tmp:
        model.save_pretrained(str(tmp))
        trainer.processing_class.save_pretrained(str(tmp))
        if identity is not None:
            (tmp / MARKER).write_text(json.dumps(identity))


def phase_stats(trainer, result, seconds: float) -> dict:
    history = trainer.state.log_history
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    accuracies = [h["eval_accuracy"] for h in history if "eval_accuracy" in h]
    logged = [h["num_tokens"] for h in history if "num_tokens" in h and "loss" in h]
    tokens = trainer.state.num_input_tokens_seen or (logged[-1] if logged else 0)
    if not tokens and "input_ids" in (trainer.train_dataset.column_names or []):
        tokens = int(sum(len(x) for x in trainer.train_dataset["input_ids"]) * result.metrics.get("epoch", 1.0))
    # (after a resume these count the whole run; tokens/s below then overstates this segment's speed)
    return {
        "steps": result.global_step,
        "train_loss": round(result.training_loss, 4),
        "best_eval_loss": round(min(evals), 4) if evals else None,
        "best_eval_accuracy": round(max(accuracies), 4) if accuracies else None,
        "seen": trainer.seen() if hasattr(trainer, "seen") else None,  # examples and loss tokens trained on, per task
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "train_seconds": round(seconds, 2),
        "tokens_seen": int(tokens),
        "tokens_per_s": round(tokens / max(seconds, 1e-9), 1),
        "log_history": history,
    }


def train_and_save(cfg, trainer, resume_from: str | None, out: Path, identity: dict) -> dict:
    """Run one training phase to its end, save the student to ``out``, and return the phase's stats."""
    from llmdistill.train.trainers import CurrentCadence

    trainer.add_callback(CurrentCadence())
    t0 = time.time()
    result = trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.time() - t0
    stats = phase_stats(trainer, result, seconds)
    first = int(resume_from.rsplit("-", 1)[1]) if resume_from else 0  # checkpoint-<step>
    stats["resumed_from"] = resume_from
    stats["seconds_per_step"] = round(seconds / max(result.global_step - first, 1), 3)  # this run's steps (KD costs more a step)
    save_model(trainer, out, cfg.train.lora is None or cfg.train.lora.merge, identity)
    return stats
