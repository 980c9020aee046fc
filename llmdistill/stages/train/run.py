"""The train stage's entry point: the SFT phase, then on-policy distillation if asked, then the card."""

from __future__ import annotations

import logging

from llmdistill.config import Config
from llmdistill.errors import UserError
from llmdistill.outputs import StageRun, read_stats, require_complete, stage_dir
from llmdistill.outputs.identity import content_hash
from llmdistill.stages.train.checkpoints import is_saved
from llmdistill.stages.train.examples import KeptTraces
from llmdistill.stages.train.processes import Processes, WorkerRun
from llmdistill.student import init_path, materialize_student

log = logging.getLogger(__name__)


def train(cfg: Config, overwrite: bool = False) -> dict:
    """Fine-tune the student on the kept traces; returns the stage stats.

    Under ``accelerate launch`` / ``torchrun`` every process trains and only the main one writes
    (``processes``); the others return the stats of their own process, unwritten."""
    require_complete(cfg, "filter")
    from llmdistill.stages.train.args import reporters

    reporters(cfg)  # a tracker that is not installed is refused before any work
    if cfg.kd.method == "on_policy":
        from llmdistill.stages.train.onpolicy import vllm_args

        vllm_args(cfg)  # refuse an engine that cannot serve the student before hours of SFT, not after
    procs = Processes()
    finished = False
    try:
        stats = _train(cfg, overwrite, procs)
        finished = True
        return stats
    finally:
        procs.close(finished)


def _train(cfg: Config, overwrite: bool, procs: Processes) -> dict:
    procs.require_same(content_hash(cfg, "train"), "config hashes")
    if procs.world > 1:
        log.info("training process %d of %d", procs.rank, procs.world)
    with StageRun(cfg, "train", overwrite) if procs.main else WorkerRun(stage_dir(cfg, "train"), overwrite) as run:
        procs.barrier()  # the main process has guarded the folder and saved config.yaml
        traces = KeptTraces(stage_dir(cfg, "filter") / "kept.jsonl")  # read as the examples are built, never held
        if traces.empty() and not (cfg.train.mode == "label" and cfg.train.label_source == "gold"):
            raise UserError(f"{stage_dir(cfg, 'filter') / 'kept.jsonl'} is empty: the filter kept no traces to train on")
        with procs.main_first():  # a pruned student is written once, then read by every process
            student_path = materialize_student(cfg, init_path(cfg))
        identity = {"config_hash": content_hash(cfg, "train"), "upstream_run_id": (read_stats(cfg, "filter") or {}).get("run_id")}
        stats: dict = {"mode": cfg.train.mode, "kd": cfg.kd.method, "student_init": student_path}
        sft_model = run.dir / "sft_model"
        if cfg.kd.method == "on_policy" and not cfg.kd.after_sft:
            start = student_path
        elif cfg.kd.method == "on_policy" and is_saved(sft_model, identity):
            log.info("SFT already done for this config: %s", sft_model)
            start, stats["sft"] = str(sft_model), {"reused": True}
        else:
            from llmdistill.stages.train.sft import run_sft

            stats["sft"] = run_sft(cfg, run, procs, student_path, traces, identity)
            start = str(sft_model)
        if cfg.kd.method == "on_policy":
            from llmdistill.stages.train.onpolicy import run_on_policy

            stats["kd"] = run_on_policy(cfg, run, procs, start, traces, identity)
        kd = stats.get("kd")
        final: dict = kd if isinstance(kd, dict) else stats["sft"]
        stats.update(
            {
                k: final.get(k)
                for k in ("steps", "train_loss", "tokens_seen", "tokens_per_s", "best_eval_loss", "best_eval_accuracy", "seen")
            }
        )
        stats["examples"] = (stats.get("sft") or {}).get("examples") or final.get("examples")
        if not procs.main:
            return stats
        assert isinstance(run, StageRun)  # the main process holds the stage run
        from llmdistill.stages.train.modelcard import write_model_card

        write_model_card(cfg, run.dir / "model", stats)
        # a rerun that ends with the same weights (a resume from the last checkpoint) keeps evaluate complete
        return run.finish(stats, outputs=sorted((run.dir / "model").glob("*.safetensors")) or None)
