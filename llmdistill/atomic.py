"""Writes that are all or nothing, and a rule for folders: the toolkit removes or replaces only
what it wrote itself.

A file is written to a temporary sibling and renamed into place, so a crash never leaves a
half-written file where a finished one is expected. A folder is filled under a temporary name and
renamed into place; every folder made this way carries a marker file (``.llmdistill``). A folder
without the marker (a user's own, or anything else) is never removed or replaced: the helpers
here refuse in one line, whoever calls them. Replaced folders of the toolkit's own are removed
(``replace="delete"``, for models rebuilt from the same settings) or moved aside into a dated
sibling (``replace="move_aside"``, for exports a user may still want).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Literal

from llmdistill.errors import UserError

log = logging.getLogger(__name__)
MARK = ".llmdistill"  # in every folder the toolkit creates whole: what made it, and when
# Files that only this toolkit writes, in folders made before the marker existed (models, pruned students).
LEGACY_MARKS = ("llmdistill-run.json", "llmdistill-init.json")


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


def mark(folder: Path, kind: str) -> None:
    """Write the marker that makes ``folder`` the toolkit's own (removable and replaceable by it)."""
    from llmdistill import __version__

    (folder / MARK).write_text(json.dumps({"written_by": "llmdistill", "version": __version__, "kind": kind, "created_at": time.time()}))


def is_ours(folder: Path) -> bool:
    """Whether ``folder`` was made by the toolkit (it carries the marker, or a legacy one)."""
    return folder.is_dir() and any((folder / m).is_file() for m in (MARK, *LEGACY_MARKS))


def kind_of(folder: Path) -> str | None:
    """The kind a marked folder was made as (``export``, ``model``...), or None."""
    try:
        return json.loads((folder / MARK).read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def not_ours(path: Path, what: str = "") -> UserError:
    return UserError(
        f"{path} exists and was not written by llmdistill{what} (it has no {MARK} marker): refusing to replace or remove it; "
        "choose a new or empty folder, or move it away yourself"
    )


def check_replaceable(path: Path, kind: str | None = None) -> None:
    """Refuse, before any work, a ``path`` that ``atomic_dir`` could not replace: a file, or a
    non-empty folder the toolkit did not make (or made as another kind, when ``kind`` is given)."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir():
        raise UserError(f"{path} exists and is not a folder: refusing to replace it; choose another path")
    if _is_empty_dir(path):
        return
    if not is_ours(path):
        raise not_ours(path)
    if kind is not None and kind_of(path) not in (None, kind):
        raise UserError(
            f"{path} holds another llmdistill output ({kind_of(path)}, not {kind}): refusing to replace it; choose another folder"
        )


def remove_ours(path: Path) -> None:
    """Remove a folder the toolkit made (a temporary or scratch folder, an old copy it replaced).
    A folder without the marker is refused, so no caller can remove user data through this."""
    if not path.exists():
        return
    if not is_ours(path):
        raise not_ours(path)
    shutil.rmtree(path)  # marked: made whole by this toolkit (see mark), never a user's folder


def fresh_dir(path: Path, kind: str) -> Path:
    """An empty marked folder at ``path``: a stale one of ours (left by a killed run) is removed first."""
    remove_ours(path)
    path.mkdir(parents=True)
    mark(path, kind)
    return path


@contextmanager
def scratch_dir(path: Path) -> Iterator[Path]:
    """A marked scratch folder for the block's work, removed when the block ends (on error too)."""
    fresh_dir(path, "scratch")
    try:
        yield path
    finally:
        remove_ours(path)


def move_aside(path: Path) -> Path:
    """Rename ``path`` to a dated sibling (``generate.replaced-20261125-0930``); never delete it."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = path.with_name(f"{path.name}.replaced-{stamp}")
    n = 1
    while dest.exists():
        n += 1
        dest = path.with_name(f"{path.name}.replaced-{stamp}-{n}")
    path.rename(dest)
    log.warning("moved %s aside to %s", path, dest)
    return dest


def temporary_for(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


@contextmanager
def atomic_dir(path: str | Path, kind: str = "folder", replace: Literal["delete", "move_aside"] = "delete") -> Iterator[Path]:
    """A fresh marked ``path.tmp`` folder to fill; it becomes ``path`` when the block ends without error.

    An existing ``path`` is checked before the work starts (see ``check_replaceable``) and
    replaced only once the new folder is complete (a model folder that another run is about to
    read never appears half-saved).
    """
    path = Path(path)
    check_replaceable(path, kind)
    tmp = fresh_dir(temporary_for(path), kind)
    try:
        yield tmp
    except BaseException:
        remove_ours(tmp)  # the half-filled temporary this block made, never the finished folder
        raise
    replace_dir(tmp, path, replace)


def replace_dir(tmp: Path, path: Path, replace: Literal["delete", "move_aside"] = "delete") -> None:
    """A finished folder ``tmp`` takes the place of ``path``. An old ``path`` of the toolkit's own is
    removed only after (or moved aside); an empty one is replaced; anything else is refused."""
    check_replaceable(path)
    if path.is_dir() and _is_empty_dir(path):
        path.rmdir()  # empty: nothing in it to lose
    if not path.exists():
        tmp.rename(path)
        return
    if replace == "move_aside":
        move_aside(path)
        tmp.rename(path)
        return
    old = path.with_name(path.name + ".old.tmp")
    remove_ours(old)
    path.rename(old)
    tmp.rename(path)
    remove_ours(old)
