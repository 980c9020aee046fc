"""The points of a curve: which problems each fraction trains on, each point's config and folder,
and the loop that trains and evaluates the points not done yet.

- **Subsets.** The validation problems (``train.validation_fraction``, by a hash of the id and
  ``train.seed``) are held out of the whole train split first; a fraction ``f`` is then the
  remaining problems whose id hashes under ``f`` (``train.data_fraction``): nested, and stable as
  the split grows. Every fraction of a seed picks its checkpoint on the same validation problems.
- **Budget.** ``curve.budget: epochs`` (default): a point trains for ``train.max_steps`` times the
  share of training problems its subset holds (and evaluates every ``train.eval_steps`` times the
  same share), so every fraction sees its problems as many times as the full recipe does.
- **Folders.** ``<output_dir>/curve/points/<mode>-f<fraction>-s<seed>/`` holds the point's own
  ``train`` and ``evaluate`` folders and links to the config's ``generate`` and ``filter``; the
  teacher and the untrained student are evaluated once, in ``curve/reference``. A point whose
  evaluation is complete is reused; one stopped mid-training resumes from its checkpoints.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from llmdistill.atomic import is_ours, mark
from llmdistill.config import Config, TrainConfig
from llmdistill.curve.report import write_curve_report
from llmdistill.data import iter_split
from llmdistill.errors import UserError
from llmdistill.jsonl import iter_rows
from llmdistill.outputs import is_complete, require_complete, stage_dir
from llmdistill.pipeline import stage_function
from llmdistill.records import FilteredTrace, Trace
from llmdistill.stages.train.examples import in_subset, in_validation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Point:
    mode: str
    fraction: float
    seed: int

    @property
    def name(self) -> str:
        return f"{self.mode}-f{self.fraction:g}-s{self.seed}"


def curve_dir(cfg: Config) -> Path:
    return Path(cfg.output_dir) / "curve"


def points(cfg: Config) -> list[Point]:
    """Every point, the smallest fractions first (they are the cheapest)."""
    c = cfg.curve
    return [Point(m, f, s) for f in c.fractions for s in c.seeds for m in c.modes]


def subsets(cfg: Config) -> dict[int, dict[float, dict]]:
    """Per seed and fraction: the training problems, the kept traces among them, and the teacher
    traces and output tokens generated for them (what the fraction costs). One line refuses a
    fraction that leaves no problem or no kept trace to train on."""
    t, fractions, seeds = cfg.train, cfg.curve.fractions, cfg.curve.seeds
    sizes: dict[int, dict[float, dict]] = {
        s: {f: {"problems": 0, "kept_traces": 0, "teacher_traces": 0, "teacher_tokens": 0} for f in fractions} for s in seeds
    }
    held, whole = dict.fromkeys(seeds, 0), dict.fromkeys(seeds, 0)

    def count(pid: str, key: str, amount: int = 1) -> None:
        for s in seeds:
            if in_validation(pid, t.validation_fraction, s):
                continue
            for f in fractions:
                if in_subset(pid, f):
                    sizes[s][f][key] += amount

    for p in iter_split(cfg.data, cfg.data.train_split):
        count(p.id, "problems")
        for s in seeds:
            out = in_validation(p.id, t.validation_fraction, s)
            held[s] += out
            whole[s] += not out
    for kept in iter_rows(stage_dir(cfg, "filter") / "kept.jsonl", FilteredTrace):
        count(kept.id, "kept_traces")
    for tr in iter_rows(stage_dir(cfg, "generate") / "traces.jsonl", Trace):
        count(tr.id, "teacher_traces")
        count(tr.id, "teacher_tokens", tr.completion_tokens)
    for s in seeds:
        full = max(1, whole[s])  # the share of all the training problems, whichever fractions are asked for
        for f in fractions:
            got = sizes[s][f]
            where = f"curve fraction {f:g} (seed {s}, {held[s]} validation problems held out first)"
            if not got["problems"]:
                raise UserError(f"{where} leaves no training problem: use a larger fraction")
            if not got["kept_traces"]:
                raise UserError(f"{where} leaves no kept teacher trace among its {got['problems']} problems: use a larger fraction")
            got["validation_problems"] = held[s]
            got["share"] = got["problems"] / full
    return sizes


def point_config(cfg: Config, point: Point, share: float) -> Config:
    """The config's recipe for one point: its mode, fraction and seed, its budget, its folder; the
    student alone evaluated (the teacher and the untrained one are the reference's)."""
    raw = cfg.model_dump(mode="json", exclude_unset=True)
    train = dict(raw.get("train", {}))
    train.update(mode=point.mode, data_fraction=point.fraction, seed=point.seed)
    t = cfg.train
    if cfg.curve.budget == "epochs" and t.max_steps > 0:
        train["max_steps"] = max(1, round(t.max_steps * share))
        if t.validation_fraction:
            train["eval_steps"] = max(1, round(t.eval_steps * share))
        if t.warmup_steps >= 1:
            train["warmup_steps"] = max(0, round(t.warmup_steps * share))
    # settings the new mode does not read would be refused: they stay with the modes that read them
    unread = TrainConfig.model_construct(**train).unread()
    train = {k: v for k, v in train.items() if k not in unread}
    raw["train"] = train
    raw["evaluate"] = {**raw.get("evaluate", {}), "models": ["student"], "baselines": []}
    raw["output_dir"] = str(curve_dir(cfg) / "points" / point.name)
    try:
        return Config.model_validate(raw)
    except ValueError as e:
        first = str(e).splitlines()
        raise UserError(
            f"curve point {point.name}: the config's recipe does not run in this mode: {' '.join(first[1:3]).strip()}"
        ) from None


def reference_config(cfg: Config) -> Config:
    """The models besides the student (the config's teacher and baselines, and always the untrained
    student: the curve's floor), evaluated once."""
    models = [m for m in cfg.evaluate.models if m != "student"]
    if "student_init" not in models:
        models.append("student_init")
    raw = cfg.model_dump(mode="json", exclude_unset=True)
    raw["evaluate"] = {**raw.get("evaluate", {}), "models": models}
    raw["output_dir"] = str(curve_dir(cfg) / "reference")
    return Config.model_validate(raw)


def _folder(path: Path, kind: str) -> None:
    """A folder of the curve's: made and marked, or one it made before."""
    if path.exists() and not is_ours(path) and any(path.iterdir()):
        raise UserError(f"{path} exists and was not made by llmdistill: move it away or set another output_dir")
    path.mkdir(parents=True, exist_ok=True)
    if not is_ours(path):
        mark(path, kind)


def _link_upstream(cfg: Config, point_dir: Path) -> None:
    """The point's ``generate`` and ``filter``: links to the config's own folders."""
    for stage in ("generate", "filter"):
        link, target = point_dir / stage, os.path.relpath(stage_dir(cfg, stage), point_dir)
        if link.is_symlink() and os.readlink(link) == target:
            continue
        if link.exists() or link.is_symlink():
            raise UserError(f"{link} is not the curve's link to {stage_dir(cfg, stage)}: move it away")
        link.symlink_to(target, target_is_directory=True)


@dataclass
class Plan:
    """What a curve runs: the subsets' sizes (per seed and fraction), each point's config, the reference's."""

    sizes: dict[int, dict[float, dict]]
    configs: dict[Point, Config]
    reference: Config


def plan(cfg: Config) -> Plan:
    """Every point's config, with every refusal before any work (the upstream outputs must be complete)."""
    sizes = subsets(cfg)
    configs = {p: point_config(cfg, p, sizes[p.seed][p.fraction]["share"]) for p in points(cfg)}
    return Plan(sizes, configs, reference_config(cfg))


def curve(cfg: Config, overwrite: bool = False, report_only: bool = False) -> dict:
    """Train and evaluate every point not done yet, then write ``curve/report.md``, ``curve.png``
    and ``curve.json`` (rewritten after each point, so a stopped curve has a report of what ran).
    ``report_only``: rewrite the report from the points already done, for the fractions, modes and
    seeds asked, and run nothing (a curve run point by point, or one still running elsewhere)."""
    if report_only:
        if overwrite:
            raise UserError("curve --report-only writes only the report: --overwrite has nothing to move aside")
        return _report_only(cfg)
    for stage in ("generate", "filter"):
        if not is_complete(cfg, stage):
            log.info("curve: %s first (its output is not complete for this config)", stage)
            stage_function(stage)(cfg, overwrite=overwrite)
    todo = plan(cfg)
    sizes, configs, ref = todo.sizes, todo.configs, todo.reference
    folder = curve_dir(cfg)
    _folder(folder, "curve")
    _folder(folder / "points", "curve")
    if not is_complete(ref, "evaluate"):
        _folder(Path(ref.output_dir), "curve")
        log.info("curve: evaluating the reference models %s", ref.evaluate.models)
        stage_function("evaluate")(ref, overwrite=overwrite)
    ran, report = 0, None
    for i, (p, pcfg) in enumerate(configs.items(), start=1):
        if is_complete(pcfg, "evaluate"):
            log.info("curve: point %d/%d %s is done (%s)", i, len(configs), p.name, pcfg.output_dir)
            continue
        point_dir = Path(pcfg.output_dir)
        _folder(point_dir, "curve")
        _link_upstream(cfg, point_dir)
        log.info(
            "curve: point %d/%d %s: %d steps on %d problems",
            i,
            len(configs),
            p.name,
            pcfg.train.max_steps,
            sizes[p.seed][p.fraction]["problems"],
        )
        if not is_complete(pcfg, "train"):
            stage_function("train")(pcfg, overwrite=overwrite)
        stage_function("evaluate")(pcfg, overwrite=overwrite)
        ran += 1
        report = write_curve_report(cfg, folder, configs, sizes, ref)  # after each point run, so a stopped curve has its report
    if report is None:  # every point was done already (the last report written is the whole curve's)
        report = write_curve_report(cfg, folder, configs, sizes, ref)
    return _result(folder, configs, ran, report)


def _report_only(cfg: Config) -> dict:
    """The report of the points done, nothing trained, evaluated or made but the report's files."""
    folder = curve_dir(cfg)
    if not is_ours(folder):
        raise UserError(f"curve --report-only: no curve in {folder} yet: run `llmdistill curve` first")
    for stage in ("generate", "filter"):
        require_complete(cfg, stage)
    todo = plan(cfg)
    report = write_curve_report(cfg, folder, todo.configs, todo.sizes, todo.reference)
    return _result(folder, todo.configs, 0, report)


def _result(folder: Path, configs: dict, ran: int, report: dict) -> dict:
    done = sum(p["status"] == "done" for p in report["points"])
    return {
        "folder": str(folder),
        "points": len(configs),
        "ran": ran,
        "done": done,
        "pending": len(configs) - done,
        "report": str(folder / "report.md"),
        "summary": report["summary"],
    }
