"""Bookkeeping shared by every stage: its folder, its resolved config, its ``stats.json``.

A stage's output is trusted only when ``stats.json`` exists, names the current config hash and
the run id of the upstream output it was built from. ``stats.json`` is written last and
atomically, so a stage killed halfway is never mistaken for a complete one.
"""

from __future__ import annotations

import json
import logging
import time
import uuid

from llmdistill.atomic import write_text
from llmdistill.config import STAGES, Config
from llmdistill.config.file import save_config

log = logging.getLogger(__name__)


def read_stats(cfg: Config, stage: str) -> dict | None:
    path = cfg.stage_dir(stage) / "stats.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def upstream(cfg: Config, stage: str) -> str | None:
    """The stage whose output this one is built from; an evaluation without the student has none."""
    if stage == "evaluate" and "student" not in cfg.evaluate.models:
        return None
    i = STAGES.index(stage)
    return STAGES[i - 1] if i > 0 else None


def is_complete(cfg: Config, stage: str) -> bool:
    stats = read_stats(cfg, stage)
    if not stats or stats.get("config_hash") != cfg.stage_hash(stage):
        return False
    up = upstream(cfg, stage)
    if up is None:
        return True
    up_stats = read_stats(cfg, up)
    return bool(up_stats) and stats.get("upstream_run_id") == up_stats.get("run_id")


def require_complete(cfg: Config, stage: str) -> dict:
    """The upstream stage's stats, or a UserError telling the user which command to run first."""
    from llmdistill.errors import UserError

    if not is_complete(cfg, stage):
        raise UserError(f"no complete '{stage}' output for this config in {cfg.stage_dir(stage)}: run `llmdistill {stage}` first")
    return read_stats(cfg, stage)


class StageRun:
    """Context for one stage execution: clears the completion marker, saves the config, times it."""

    def __init__(self, cfg: Config, stage: str):
        self.cfg, self.stage = cfg, stage
        self.dir = cfg.stage_dir(stage)
        self.t0 = 0.0

    def __enter__(self) -> "StageRun":
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "stats.json").unlink(missing_ok=True)
        save_config(self.cfg, self.dir / "config.yaml")
        self.t0 = time.time()
        return self

    def __exit__(self, *exc) -> None:
        pass

    def finish(self, stats: dict) -> dict:
        up = upstream(self.cfg, self.stage)
        full = {
            "stage": self.stage,
            "config_hash": self.cfg.stage_hash(self.stage),
            "run_id": uuid.uuid4().hex,
            "upstream_run_id": (read_stats(self.cfg, up) or {}).get("run_id") if up else None,
            "started_at": self.t0,
            "finished_at": time.time(),
            "seconds": round(time.time() - self.t0, 2),
            **stats,
        }
        write_text(self.dir / "stats.json", json.dumps(full, indent=2))
        log.info("%s done in %.1fs -> %s", self.stage, full["seconds"], self.dir)
        return full
