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

from llmdistill.atomic import atomic_dir, fresh_dir, move_aside, replace_dir, temporary_for
from llmdistill.outputs import refusal
from llmdistill.stages.train.sets import column

log = logging.getLogger(__name__)

MARKER = "llmdistill-run.json"  # in a checkpoint or model folder: the config and upstream run it belongs to


def checkpoint_dir(run_dir: Path, name: str, identity: dict, resume: bool, overwrite: bool = False, procs=None) -> tuple[Path, str | None]:
    """A checkpoint folder for this config and upstream run, and the checkpoint to resume from.

    Checkpoints of another identity (content settings or upstream run) are refused, or moved
    aside with ``overwrite``; with ``train.resume: false`` this config's own are moved aside.
    Under several processes (``procs``) the main process prepares the folder and the others
    then read the same answer from it.
    """
    if procs is not None and procs.world > 1:
        with procs.main_first():
            if procs.main:
                return_value = checkpoint_dir(run_dir, name, identity, resume, overwrite)
            else:
                return_value = _read_checkpoint_dir(run_dir / name, identity, resume)
        return return_value

    path = run_dir / name
    marker = path / MARKER
    if marker.is_file():
        mine = json.loads(marker.read_text()) == identity
        if mine and resume:
            last = last_checkpoint(path)
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


def last_checkpoint(path: Path) -> str | None:
    """The newest whole checkpoint: a run killed while saving leaves a ``checkpoint-N`` folder
    without ``trainer_state.json`` (written last), which is skipped (and left in place)."""
    steps = sorted((int(p.name.split("-")[1]), p) for p in path.glob("checkpoint-*") if p.name.split("-")[1].isdigit() and p.is_dir())
    for _, ckpt in reversed(steps):
        if (ckpt / "trainer_state.json").is_file():
            return str(ckpt)
        log.warning("%s is incomplete (a run stopped while saving it): resuming from an earlier checkpoint", ckpt)
    return None


def _read_checkpoint_dir(path: Path, identity: dict, resume: bool) -> tuple[Path, str | None]:
    """A non-main process's view of the folder the main process just prepared."""
    marker = path / MARKER
    if not (marker.is_file() and json.loads(marker.read_text()) == identity):
        raise RuntimeError(f"{path}: the main process did not mark this checkpoint folder as this run's")
    return path, (last_checkpoint(path) if resume else None)


def is_saved(model_dir: Path, identity: dict) -> bool:
    marker = model_dir / MARKER
    return marker.is_file() and json.loads(marker.read_text()) == identity


def save_model(trainer, out: Path, merge: bool, identity: dict | None = None, procs=None) -> None:
    """Save the student (LoRA merged into the weights unless ``merge`` is off) atomically.

    Under several processes the main process writes; with FSDP or DeepSpeed, whose weights are
    sharded, every process takes part in ``Trainer.save_model`` (which gathers them) and the
    main process then completes the folder."""
    from peft import PeftModel

    if procs is not None and procs.world > 1:
        if trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
            _save_sharded(trainer, out, identity, procs)
            return
        if procs.main:
            save_model(trainer, out, merge, identity)
        procs.barrier()
        return
    model = trainer.model
    if isinstance(model, PeftModel) and merge:
        model = model.merge_and_unload()
    with atomic_dir(out, kind="model") as tmp:
        model.save_pretrained(str(tmp))
        trainer.processing_class.save_pretrained(str(tmp))
        if identity is not None:
            (tmp / MARKER).write_text(json.dumps(identity))


def _save_sharded(trainer, out: Path, identity: dict | None, procs) -> None:
    """FSDP / DeepSpeed: the weights gathered by ``Trainer.save_model`` (all processes), the folder
    renamed into place by the main process once whole. (A LoRA adapter is saved as trained, unmerged.)"""
    tmp = temporary_for(out)
    with procs.main_first():
        if procs.main:
            fresh_dir(tmp, "model")
    trainer.save_model(str(tmp))  # writes on the main process, gathers on all
    procs.barrier()
    if procs.main:
        if identity is not None:
            (tmp / MARKER).write_text(json.dumps(identity))
        replace_dir(tmp, out)
    procs.barrier()


def phase_stats(trainer, result, seconds: float, procs=None) -> dict:
    history = trainer.state.log_history
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    accuracies = [h["eval_accuracy"] for h in history if "eval_accuracy" in h]
    logged = [h["num_tokens"] for h in history if "num_tokens" in h and "loss" in h]
    tokens = trainer.state.num_input_tokens_seen or (logged[-1] if logged else 0)
    if procs is not None and procs.world > 1:  # TRL's count drops the batches accelerate pads an epoch's end with
        tokens = sum(procs.gather(getattr(trainer, "_input_tokens", 0)))
    if not tokens and "input_ids" in (trainer.train_dataset.column_names or []):
        import pyarrow.compute as pc  # the lengths from the Arrow offsets: the rows are not read

        tokens = int(column(trainer.train_dataset, "input_ids", pc.list_value_length).sum() * result.metrics.get("epoch", 1.0))
    # (after a resume these count the whole run; tokens/s below then overstates this segment's speed)
    return {
        "steps": result.global_step,
        "train_loss": round(result.training_loss, 4),
        "best_eval_loss": round(min(evals), 4) if evals else None,
        "best_eval_accuracy": round(max(accuracies), 4) if accuracies else None,
        # examples and loss tokens trained on, per task (summed over the training processes)
        "seen": (procs.sum_counts(trainer.seen()) if procs is not None else trainer.seen()) if hasattr(trainer, "seen") else None,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "train_seconds": round(seconds, 2),
        "tokens_seen": int(tokens),
        "tokens_per_s": round(tokens / max(seconds, 1e-9), 1),
        "log_history": history,
    }


def train_and_save(cfg, trainer, resume_from: str | None, out: Path, identity: dict, procs=None) -> dict:
    """Run one training phase to its end, save the student to ``out``, and return the phase's stats."""
    from llmdistill.stages.train.trainers import CurrentCadence

    trainer.add_callback(CurrentCadence())
    t0 = time.time()
    result = trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.time() - t0
    stats = phase_stats(trainer, result, seconds, procs)
    first = int(resume_from.rsplit("-", 1)[1]) if resume_from else 0  # checkpoint-<step>
    stats["resumed_from"] = resume_from
    stats["seconds_per_step"] = round(seconds / max(result.global_step - first, 1), 3)  # this run's steps (KD costs more a step)
    save_model(trainer, out, cfg.train.lora is None or cfg.train.lora.merge, identity, procs)
    return stats
