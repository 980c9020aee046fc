"""JSONL files of pydantic rows: validated reads with line numbers, crash-safe writes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Iterator, TypeVar

import jsonlines
from pydantic import BaseModel, ValidationError

from llmdistill.atomic import atomic_open
from llmdistill.errors import UserError

R = TypeVar("R", bound=BaseModel)


def _dumps(obj) -> str:
    """pydantic's own JSON encoder for rows (several times faster than dumping a dict)."""
    return obj.model_dump_json() if isinstance(obj, BaseModel) else json.dumps(obj)


def _writer(fh) -> jsonlines.Writer:
    return jsonlines.Writer(fh, dumps=_dumps)


def iter_rows(path: str | Path, model: type[R]) -> Iterator[R]:
    """Yield validated rows; a malformed line is a UserError naming the file and line number."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                yield model.model_validate_json(line)
            except ValidationError as e:
                err = e.errors()[0]
                if err["type"] == "json_invalid":
                    raise UserError(f"{path}:{lineno}: malformed JSON ({err['ctx'].get('error', err['msg'])})") from None
                loc = ".".join(str(p) for p in err["loc"]) or "row"
                raise UserError(f"{path}:{lineno}: invalid {model.__name__} row: {loc}: {err['msg']}") from None


def read_rows(path: str | Path, model: type[R]) -> list[R]:
    return list(iter_rows(path, model))


def write_rows(path: str | Path, rows: Iterable[BaseModel]) -> int:
    """Write all rows atomically (temp file + rename), so a crash never leaves a file half-written."""
    n = 0
    with atomic_open(path) as fh:
        writer = _writer(fh)
        for row in rows:
            writer.write(row)
            n += 1
    return n


class RowAppender:
    """Appends rows as they are produced and fsyncs each batch, for resumable long jobs
    (``fsync=False``: for scratch files that a crash makes worthless anyway)."""

    def __init__(self, path: str | Path, fsync: bool = True):
        self.path, self.fsync = Path(path), fsync
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")
        self._writer = _writer(self._fh)

    def write(self, rows: Iterable[BaseModel]) -> None:
        for row in rows:
            self._writer.write(row)
        if self.fsync:
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "RowAppender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def recover_rows(path: str | Path, model: type[R]) -> list[R]:
    """Read the rows a killed run left behind, cutting a torn (unterminated or unparsable) last line.

    Only the final line may be torn: any earlier bad line means the file was edited or corrupted,
    which is a UserError rather than something to silently repair.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    keep = len(data)
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
    lines = data[:keep].decode("utf-8").splitlines()
    if lines:
        try:
            model.model_validate(json.loads(lines[-1]))
        except (json.JSONDecodeError, ValidationError):
            keep = data.rfind(b"\n", 0, keep - 1) + 1
            lines = lines[:-1]
    if keep != len(data):
        with open(path, "r+b") as fh:
            fh.truncate(keep)
    rows = []
    for lineno, line in enumerate(lines, start=1):
        try:
            rows.append(model.model_validate(json.loads(line)))
        except (json.JSONDecodeError, ValidationError) as e:
            raise UserError(f"{path}:{lineno}: malformed row in a partial output ({e}); delete the file to restart") from None
    return rows
