"""JSONL files of pydantic rows: validated reads with line numbers, crash-safe writes."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

import jsonlines
from pydantic import BaseModel, ValidationError

from llmdistill.atomic import atomic_open
from llmdistill.errors import UserError

R = TypeVar("R", bound=BaseModel)
log = logging.getLogger(__name__)


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
                raise row_error(path, lineno, model, e) from None


def row_error(path: Path, lineno: int, model: type[BaseModel], e: ValidationError, advice: str = "") -> UserError:
    """One line naming the file, the line and what is wrong with it."""
    err = e.errors()[0]
    if err["type"] == "json_invalid":
        return UserError(f"{path}:{lineno}: malformed JSON ({err['ctx'].get('error', err['msg'])}){advice}")
    loc = ".".join(str(p) for p in err["loc"]) or "row"
    return UserError(f"{path}:{lineno}: invalid {model.__name__} row: {loc}: {err['msg']}{advice}")


def read_rows(path: str | Path, model: type[R]) -> list[R]:
    return list(iter_rows(path, model))


def iter_offsets(path: str | Path, model: type[R]) -> Iterator[tuple[int, R]]:
    """``iter_rows`` with each row's byte offset in the file, to read it again later (``RowsAt``)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    with open(path, "rb") as fh:
        offset = 0
        for lineno, line in enumerate(fh, start=1):
            start, offset = offset, offset + len(line)
            if not line.strip():
                continue
            try:
                yield start, model.model_validate_json(line)
            except ValidationError as e:
                raise row_error(path, lineno, model, e) from None


class RowsAt(Generic[R]):
    """Rows of a JSONL file read again by byte offset (from ``iter_offsets``), through one open handle."""

    def __init__(self, path: str | Path, model: type[R]):
        self.path, self.model = Path(path), model
        self._fh = open(self.path, "rb")  # noqa: SIM115 -- held open across reads; closed by close()

    def __getitem__(self, offset: int) -> R:
        self._fh.seek(offset)
        return self.model.model_validate_json(self._fh.readline())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> RowsAt[R]:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


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
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 -- held open across writes; closed by close()
        self._writer = _writer(self._fh)

    def write(self, rows: Iterable[BaseModel]) -> None:
        for row in rows:
            self._writer.write(row)
        if self.fsync:
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> RowAppender:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def recover_rows(path: str | Path, model: type[R]) -> list[R]:
    """Every row ``iter_recovered`` reads, as a list."""
    return list(iter_recovered(path, model))


def _complete_end(path: Path, size: int) -> int:
    """The byte just past the file's last newline (0 if it has none), read from the end."""
    with open(path, "rb") as fh:
        end = size
        while end > 0:
            start = max(0, end - (1 << 16))
            fh.seek(start)
            i = fh.read(end - start).rfind(b"\n")
            if i != -1:
                return start + i + 1
            end = start
    return 0


def iter_recovered(path: str | Path, model: type[R]) -> Iterator[R]:
    """Stream the rows a killed run left behind. Only a torn write may be cut: an unterminated last
    line (appends end every row with a newline, so a line without one was cut off mid-write).

    A complete line that does not validate (edited, corrupted, or written by another version of
    the toolkit) is never cut: it is a UserError naming the file and line, and the file is left
    exactly as it was. The torn tail is cut only once every complete line has validated (when the
    iteration ends).
    """
    path = Path(path)
    if not path.exists():
        return
    size = path.stat().st_size
    keep = _complete_end(path, size)  # everything up to the last newline; the rest, if any, is a torn write
    with open(path, "rb") as fh:
        done = 0
        for lineno, line in enumerate(fh, start=1):
            if done >= keep:
                break
            done += len(line)
            if not line.strip():
                continue
            try:
                yield model.model_validate_json(line)
            except ValidationError as e:
                raise row_error(
                    path,
                    lineno,
                    model,
                    e,
                    "; the line is complete, so it was left as it is and nothing was changed "
                    "(a partial output is resumed only when every complete line reads)",
                ) from None
    if keep != size:
        log.warning("%s: cut a torn last line (%d bytes) left by a run that was stopped mid-write", path, size - keep)
        with open(path, "r+b") as fh:
            fh.truncate(keep)
