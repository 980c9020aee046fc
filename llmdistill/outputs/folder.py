"""A stage's folder: where it is, whether its output is complete, its ``stats.json``, its lock.

A stage's output is complete when ``stats.json`` exists (written last, atomically), the
``config.yaml`` beside it has the same content settings as the current config, and it was built
from the upstream output that is there now. Finished work is never deleted: outputs made with
other content settings (or from another upstream output) are refused, or with ``overwrite``
moved aside into a dated folder. One process at a time writes a stage folder (an OS lock that
dies with its process).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from pathlib import Path

from llmdistill.atomic import move_aside, write_text
from llmdistill.config import Config
from llmdistill.config.file import save_config
from llmdistill.errors import UserError
from llmdistill.outputs.identity import changes, content_hash, saved_config

log = logging.getLogger(__name__)
STAGES = ["generate", "filter", "train", "evaluate"]  # in order: each is built from the one before


def stage_dir(cfg: Config, stage: str) -> Path:
    """Where ``stage`` writes: ``<output_dir>/<stage>``."""
    return Path(cfg.output_dir) / stage


def read_stats(cfg: Config, stage: str) -> dict | None:
    path = stage_dir(cfg, stage) / "stats.json"
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


def _stale_upstream(cfg: Config, stage: str, stats: dict | None) -> str | None:
    """Why a complete output no longer matches the upstream output that is there now, if it does not."""
    up = upstream(cfg, stage)
    up_stats = read_stats(cfg, up) if up else None
    if stats is None or up is None or up_stats is None or stats.get("upstream_run_id") == up_stats.get("run_id"):
        return None
    return f"it was built from another '{up}' output than the one in {stage_dir(cfg, up)}"


def is_complete(cfg: Config, stage: str) -> bool:
    stats = read_stats(cfg, stage)
    if not stats:
        return False
    saved = saved_config(stage_dir(cfg, stage), type(cfg))
    if saved is None or changes(saved, cfg, stage):
        return False
    up = upstream(cfg, stage)
    return up is None or (read_stats(cfg, up) is not None and _stale_upstream(cfg, stage, stats) is None)


def require_complete(cfg: Config, stage: str) -> dict:
    """The upstream stage's stats, or a UserError telling the user which command to run first."""
    if not is_complete(cfg, stage):
        raise UserError(f"no complete '{stage}' output for this config in {stage_dir(cfg, stage)}: run `llmdistill {stage}` first")
    stats = read_stats(cfg, stage)
    assert stats is not None  # is_complete has just read it
    return stats


def holds_outputs(folder: Path) -> bool:
    """Whether a stage folder holds anything a run produced (rows, checkpoints, models, reports):
    a non-empty file other than the saved ``config.yaml``."""
    if not folder.is_dir():
        return False
    return any(p.is_file() and p.name != "config.yaml" and p.stat().st_size > 0 for p in folder.rglob("*"))


def refusal(what: str, reasons: list[str]) -> UserError:
    return UserError(
        f"{what} ({'; '.join(reasons)}): use a new output_dir, or --overwrite to move the old outputs aside into a dated folder"
    )


class StageLock:
    """An exclusive OS lock on a stage folder, held for the stage's whole run. The OS releases it
    when its process dies, so a killed run never blocks the next one."""

    def __init__(self, cfg: Config, stage: str):
        self.folder = stage_dir(cfg, stage)
        self.path = Path(cfg.output_dir) / f".{stage}.lock"  # beside the folder: it stays when the folder is moved aside

    def __enter__(self) -> StageLock:
        from filelock import FileLock, Timeout

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = FileLock(str(self.path), timeout=0.5)
        try:
            self.lock.acquire()
        except Timeout:
            holder = self.path.read_text().strip() if self.path.is_file() else ""
            raise UserError(
                f"{self.folder} is being written by another process (pid {holder or 'unknown'}): "
                "wait for it to finish or stop it; one process writes a stage folder at a time"
            ) from None
        try:
            self.path.write_text(f"{os.getpid()}\n")  # the holder's pid, for the message above
        except BaseException:
            self.lock.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.lock.release()


class StageRun:
    """One stage execution: takes the folder's lock, refuses (or moves aside) outputs made with
    other content settings, saves the config, and writes ``stats.json`` last."""

    def __init__(self, cfg: Config, stage: str, overwrite: bool = False):
        self.cfg, self.stage, self.overwrite = cfg, stage, overwrite
        self.dir = stage_dir(cfg, stage)
        self.lock = StageLock(cfg, stage)
        self.t0 = 0.0

    def __enter__(self) -> StageRun:
        self.lock.__enter__()
        try:
            self._guard()
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / "stats.json").unlink(missing_ok=True)  # our own completion marker in our stage folder: set again by finish()
            save_config(self.cfg, self.dir / "config.yaml")
        except BaseException:
            self.lock.__exit__()
            raise
        self.t0 = time.time()
        return self

    def __exit__(self, *exc) -> None:
        self.lock.__exit__()

    def _guard(self) -> None:
        if not holds_outputs(self.dir):  # only a saved config of a run that produced nothing (a first typo): reused
            return
        saved = saved_config(self.dir, type(self.cfg))
        reasons = changes(saved, self.cfg, self.stage, selection=False) if saved is not None else []
        stale = _stale_upstream(self.cfg, self.stage, read_stats(self.cfg, self.stage))
        reasons += [stale] if stale and not reasons else []
        if not reasons:
            return
        if not self.overwrite:
            raise refusal(f"{self.dir} holds '{self.stage}' outputs made otherwise", reasons)
        move_aside(self.dir)

    def finish(self, stats: dict, outputs: list[Path] | None = None) -> dict:
        """Write ``stats.json``. With ``outputs``, the run id is a digest of those files, so a rerun
        that changes nothing keeps the stages built on it complete."""
        up = upstream(self.cfg, self.stage)
        full = {
            "stage": self.stage,
            "config_hash": content_hash(self.cfg, self.stage),
            "run_id": _digest(outputs) if outputs else uuid.uuid4().hex,
            "upstream_run_id": (read_stats(self.cfg, up) or {}).get("run_id") if up else None,
            "started_at": self.t0,
            "finished_at": time.time(),
            "seconds": round(time.time() - self.t0, 2),
            **stats,
        }
        write_text(self.dir / "stats.json", json.dumps(full, indent=2))
        log.info("%s done in %.1fs -> %s", self.stage, full["seconds"], self.dir)
        return full


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:32]
