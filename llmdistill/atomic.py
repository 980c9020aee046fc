"""Writes that are all or nothing: a temporary sibling, then a rename, so a crash never leaves a
half-written file or folder where a finished one is expected."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


@contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """An open handle on ``path.tmp``, renamed over ``path`` when the block ends without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, mode, encoding=None if "b" in mode else "utf-8") as fh:
        yield fh
    os.replace(tmp, path)


def write_text(path: str | Path, text: str) -> None:
    with atomic_open(path) as fh:
        fh.write(text)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """A fresh ``path.tmp`` folder to fill; it becomes ``path`` when the block ends without error.

    The old folder is replaced only once the new one is complete (a model folder that another
    run is about to read never appears half-saved).
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # a temporary left by a killed run
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a half-filled temporary, never the finished folder
        raise
    replace_dir(tmp, path)


def replace_dir(tmp: Path, path: Path) -> None:
    """A finished folder ``tmp`` takes the place of ``path`` (the old one is removed only after)."""
    if path.exists():
        old = path.with_name(path.name + ".old.tmp")
        shutil.rmtree(old, ignore_errors=True)
        path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(path)
