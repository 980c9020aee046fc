"""Load problems from local JSON/JSONL/CSV/Parquet files or an HF ``datasets`` id.

A local ``data.path`` is a folder holding ``<split>.jsonl`` (or .json/.csv/.parquet) or a single
file; anything else is taken as a dataset id for ``datasets.load_dataset`` (which needs the hub).
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

from llmdistill.config import DataConfig
from llmdistill.errors import UserError
from llmdistill.records import Problem
from llmdistill.tasks import make_problem, question_text

log = logging.getLogger(__name__)
SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def _read_local(path: Path) -> list[dict]:
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    if path.suffix == ".parquet":
        import datasets

        return list(datasets.load_dataset("parquet", data_files=str(path), split="train"))
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{lineno}: malformed JSON line ({e.msg})") from None
    return rows


def _split_file(folder: Path, split: str) -> Path:
    for suffix in SUFFIXES:
        for name in (f"{split}{suffix}", *(p.name for p in folder.glob(f"*{split}{suffix}"))):
            if (folder / name).is_file():
                return folder / name
    raise UserError(f"{folder}: no file for split '{split}' (looked for {split}.jsonl/.json/.csv/.parquet)")


def _raw_rows(cfg: DataConfig, split: str) -> list[dict]:
    path = Path(cfg.path)
    if path.is_dir():
        return _read_local(_split_file(path, split))
    if path.is_file():
        return _read_local(path)
    if path.suffix in SUFFIXES or cfg.path.startswith((".", "/")):
        raise UserError(f"{cfg.path}: data file or folder not found")
    import datasets

    try:
        return list(datasets.load_dataset(cfg.path, cfg.name, split=split))
    except Exception as e:  # hub, network or unknown-id failures all mean the same to a user
        raise UserError(f"could not load dataset {cfg.path!r} split {split!r}: {type(e).__name__}: {e}") from None


def load_problems(cfg: DataConfig, split: str) -> list[Problem]:
    """Problems of one split with stable ids; ``max_train``/``max_test`` keep the first rows."""
    rows = _raw_rows(cfg, split)
    limit = cfg.max_train if split == cfg.train_split else cfg.max_test if split == cfg.test_split else None
    rows = rows[:limit] if limit else rows
    problems, seen = [], set()
    needed = [f for f in (None if cfg.question_format else cfg.question_field, cfg.answer_field, cfg.choices_field) if f]
    for i, row in enumerate(rows):
        for field in needed:
            if field not in row:
                raise UserError(f"{cfg.path} ({split}) row {i}: no field '{field}' (fields: {', '.join(row)})")
        pid = str(row[cfg.id_field]) if cfg.id_field and cfg.id_field in row else f"{split}-{i}"
        if pid in seen:
            raise UserError(f"{cfg.path} ({split}): duplicate id {pid!r}")
        seen.add(pid)
        try:
            problems.append(make_problem(row, cfg, pid, split))
        except UserError as e:
            raise UserError(f"{cfg.path} ({split}) row {i}: {e}") from None
    log.info("loaded %d %s problems from %s", len(problems), split, cfg.path)
    return problems


def load_question_texts(path: str, cfg: DataConfig) -> list[str]:
    """The question texts of an evaluation file (for decontamination), read with the run's fields."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{path}: evaluation set for decontamination not found")
    rows = _read_local(p)
    return [question_text(r, cfg, None) for r in rows]
