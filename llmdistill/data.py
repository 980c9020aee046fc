"""Load problems from local JSON/JSONL/CSV/Parquet files, HF ``save_to_disk`` folders, or an HF id.

A local ``data.path`` is a folder holding ``<split>.jsonl`` (or .json/.csv/.parquet), a folder
written by ``Dataset.save_to_disk``/``DatasetDict.save_to_disk``, or a single file; anything else
is taken as a dataset id for ``datasets.load_dataset`` (which needs the hub).

Real data has warts. A malformed row (a missing field, choices that are not a list, a label
index outside ``data.labels``) is a one-line error naming the file and row; an empty split is an
error (nothing to do is a mistake in the config). A row whose gold answer cannot be read, or that
lists one choice text twice, does not stop a run of thousands: it is counted in the split's
``notes`` (which stages put in their ``stats.json``) and logged once.
"""

from __future__ import annotations

import csv
import json
import logging
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from llmdistill.answers.checking import duplicate_choices, make_problem, question_text
from llmdistill.answers.reading import to_number
from llmdistill.buckets import Buckets, h64
from llmdistill.config import DataConfig
from llmdistill.errors import UnreadableGold, UserError
from llmdistill.records import Problem

log = logging.getLogger(__name__)
SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def _read_local(path: Path) -> list[dict]:
    return list(_iter_local(path))


def _iter_local(path: Path) -> Iterator[dict]:
    """A local file's rows; JSON lines are read one at a time (a split of millions streams)."""
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as fh:
            yield from csv.DictReader(fh)
        return
    if path.suffix == ".parquet":
        import datasets

        yield from datasets.load_dataset("parquet", data_files=str(path), split="train")
        return
    with open(path, encoding="utf-8") as fh:
        head = fh.read(4096)
        if head.lstrip().startswith("["):
            text = head + fh.read()
            try:
                yield from json.loads(text)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None
            return
        fh.seek(0)
        for lineno, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}:{lineno}: malformed JSON line ({e.msg})") from None


def _split_file(folder: Path, split: str) -> Path:
    for suffix in SUFFIXES:
        for name in (f"{split}{suffix}", *(p.name for p in folder.glob(f"*{split}{suffix}"))):
            if (folder / name).is_file():
                return folder / name
    raise UserError(f"{folder}: no file for split '{split}' (looked for {split}.jsonl/.json/.csv/.parquet)")


def _saved_to_disk(folder: Path, split: str) -> list[dict] | None:
    """Rows of a folder written by ``save_to_disk``: a DatasetDict's split, or a single Dataset
    (used for every split, like a single file); None for any other folder."""
    if not ((folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()):
        return None
    import datasets

    saved = datasets.load_from_disk(str(folder))
    if isinstance(saved, datasets.DatasetDict):
        if split not in saved:
            raise UserError(f"{folder}: the saved DatasetDict has no split {split!r} (splits: {', '.join(saved)})")
        saved = saved[split]
    return list(saved)


def _raw_rows(cfg: DataConfig, split: str) -> Iterable[dict]:
    path = Path(cfg.path)
    if path.is_dir():
        rows = _saved_to_disk(path, split)
        return rows if rows is not None else _iter_local(_split_file(path, split))
    if path.is_file():
        return _iter_local(path)
    if path.suffix in SUFFIXES or cfg.path.startswith((".", "/")):
        raise UserError(f"{cfg.path}: data file or folder not found")
    import datasets

    try:
        return list(datasets.load_dataset(cfg.path, cfg.name, split=split))
    except Exception as e:  # hub, network or unknown-id failures all mean the same to a user
        raise UserError(f"could not load dataset {cfg.path!r} split {split!r}: {type(e).__name__}: {e}") from None


@dataclass
class Split:
    """A split's problems, and what loading them found: rows read, gold answers that could not be
    read (left out), rows listing one choice text twice (kept: either letter is right)."""

    problems: list[Problem]
    notes: dict = field(default_factory=dict)


_WARNED: set[tuple] = set()  # (path, split, kind): each data wart is logged once per process


def load_split(cfg: DataConfig, split: str) -> Split:
    """Problems of one split with stable ids; ``max_train``/``max_test`` keep the first rows."""
    notes: dict = {}
    problems = list(iter_split(cfg, split, notes))
    log.info("loaded %d %s problems from %s", len(problems), split, cfg.path)
    return Split(problems, notes)


def iter_split(cfg: DataConfig, split: str, notes: dict | None = None) -> Iterator[Problem]:
    """``load_split``'s problems one at a time (a local JSON-lines split is read as it goes);
    ``notes`` is filled once the split is read."""
    where = f"{cfg.path} ({split})"
    limit = cfg.max_train if split == cfg.train_split else cfg.max_test if split == cfg.test_split else None
    # the ids seen, as 8-byte hashes spilled to disk by bucket: a duplicate is found when the split ends
    seen, hashes, unreadable, duplicated, n_rows, n_problems = array("Q"), _id_buckets(), [], 0, 0, 0
    needed = [f for f in (None if cfg.question_format else cfg.question_field, cfg.answer_field, cfg.choices_field) if f]
    for i, row in enumerate(_raw_rows(cfg, split)):
        if limit and i >= limit:
            break
        n_rows += 1
        for name in needed:
            if name not in row:
                raise UserError(f"{where} row {i}: no field '{name}' (fields: {', '.join(row)})")
        pid = str(row[cfg.id_field]) if cfg.id_field and cfg.id_field in row else f"{split}-{i}"
        seen.append(h64(pid))
        if len(seen) == 8192:
            hashes.add(np.frombuffer(seen, dtype=ID_RECORD).copy())
            seen = array("Q")
        try:
            problem = make_problem(row, cfg, pid, split)
        except UnreadableGold as e:
            unreadable.append(f"row {i} ({pid}): {e}")
            continue
        except UserError as e:
            raise UserError(f"{where} row {i}: {e}") from None
        if problem.answer is not None and cfg.answer_type == "numeric" and _readable(problem.answer) is None:
            unreadable.append(f"row {i} ({pid}): gold answer {problem.answer[:60]!r} is not a number or arithmetic expression")
            continue
        if problem.choices and duplicate_choices(problem.choices):
            duplicated += 1
        problem.row = i
        n_problems += 1
        yield problem
    if not n_rows:
        raise UserError(f"{where}: no rows: an empty split leaves nothing to do (check data.path and the split names)")
    hashes.add(np.frombuffer(seen, dtype=ID_RECORD).copy())
    with hashes:
        _no_duplicate_ids(cfg, split, hashes, where)
    if notes is not None:
        notes.update({"rows": n_rows, "problems": n_problems, "unreadable_gold": len(unreadable), "duplicate_choices": duplicated})
    _warn_once(cfg, split, unreadable, duplicated)
    if not n_problems:
        raise UserError(f"{where}: none of its {n_rows} rows has a readable gold answer (e.g. {unreadable[0]})")


@lru_cache(maxsize=1 << 16)
def _readable(answer: str) -> float | None:
    """``to_number`` of a gold answer, remembered: splits repeat answers, and an equation takes the parser ~40 us."""
    return to_number(answer)


ID_RECORD = np.dtype([("h", np.uint64)])


def _id_buckets() -> Buckets:
    return Buckets(ID_RECORD)


def _no_duplicate_ids(cfg: DataConfig, split: str, hashes, where: str) -> None:
    """A one-line refusal naming the first id that occurs twice (found again by its hash)."""
    twice = None
    for bucket in hashes.buckets():
        values = np.sort(bucket["h"])
        same = values[1:] == values[:-1]
        if same.any():
            twice = int(values[1:][same][0])
            break
    if twice is None:
        return
    for i, row in enumerate(_raw_rows(cfg, split)):
        pid = str(row[cfg.id_field]) if cfg.id_field and cfg.id_field in row else f"{split}-{i}"
        if h64(pid) == twice:
            raise UserError(f"{where}: duplicate id {pid!r}")
    raise UserError(f"{where}: an id occurs twice")


def _warn_once(cfg: DataConfig, split: str, unreadable: list[str], duplicated: int) -> None:
    if unreadable and (cfg.path, split, "gold") not in _WARNED:
        _WARNED.add((cfg.path, split, "gold"))
        log.warning(
            "%s (%s): %d rows have a gold answer that cannot be read and are left out (counted in stats.json as unreadable_gold), e.g. %s",
            cfg.path,
            split,
            len(unreadable),
            "; ".join(unreadable[:3]),
        )
    if duplicated and (cfg.path, split, "choices") not in _WARNED:
        _WARNED.add((cfg.path, split, "choices"))
        log.warning(
            "%s (%s): %d rows list the same choice text twice; an answer naming that text, or any of its letters, "
            "counts as that choice (stats.json: duplicate_choices)",
            cfg.path,
            split,
            duplicated,
        )


def load_problems(cfg: DataConfig, split: str) -> list[Problem]:
    """The problems of one split (``load_split`` without its notes)."""
    return load_split(cfg, split).problems


def load_question_texts(path: str, cfg: DataConfig) -> list[str]:
    """The question texts of an evaluation file (for decontamination), read with the run's fields."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{path}: evaluation set for decontamination not found")
    rows = _read_local(p)
    return [question_text(r, cfg, None) for r in rows]
