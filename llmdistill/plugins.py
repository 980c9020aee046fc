"""Extension points: teacher backends, answer checkers and filters a user's own package brings.

Two ways to name one in a config:

- a **registered name**, from the Python entry points a package declares (as simonw/llm's plugins
  and pytest's do), e.g. in the plugin's ``pyproject.toml``::

      [project.entry-points."llmdistill.backends"]
      inhouse = "my_llmdistill.backend:InHouseBackend"
      [project.entry-points."llmdistill.checkers"]
      sql = "my_llmdistill.checks:same_rows"
      [project.entry-points."llmdistill.filters"]
      no_urls = "my_llmdistill.filters:no_urls"

  then ``teacher.backend: inhouse``, ``data.answer_type: sql``, ``filter.order: [..., no_urls]``;
- a **path** ``module:attribute`` for code that is not packaged: ``teacher.backend:
  my_backend:InHouseBackend`` (the module importable from where the command runs).

What each is (the README's Plugins section has a worked example):

- a backend: a ``llmdistill.backends.Backend`` subclass, built with ``model_name_or_path`` and
  ``teacher.options`` as keyword arguments;
- a checker: ``check(pred: str, gold: str) -> verdict`` or ``(verdict, reason)``, the verdict one
  of ``"correct"``, ``"wrong"``, ``"unparseable"``; ``pred`` is the answer the completion states
  ("The answer is ..."), ``gold`` the answer field as written;
- a filter: ``judge(rows: list[FilteredTrace], options: dict) -> list[str | None]``: for each row
  the reason it is dropped, or None to keep it; ``options`` is ``filter.options[<name>]``.
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import EntryPoint, entry_points

from llmdistill.errors import UserError

GROUPS = {"backend": "llmdistill.backends", "checker": "llmdistill.checkers", "filter": "llmdistill.filters"}


@cache
def registered(kind: str) -> dict[str, EntryPoint]:
    """The entry points installed packages declare for ``kind`` (backend, checker, filter), by name."""
    return {ep.name: ep for ep in entry_points(group=GROUPS[kind])}


def is_path(name: str) -> bool:
    return ":" in name


def known(kind: str, name: str) -> bool:
    """Whether ``name`` can be loaded as a ``kind``: a registered name or a ``module:attribute`` path."""
    return is_path(name) or name in registered(kind)


def load(kind: str, name: str):
    """The object ``name`` stands for: a registered entry point, or ``module:attribute`` imported.
    A failure is one line naming what to fix."""
    try:
        if is_path(name):
            module, _, attr = name.partition(":")
            return getattr(importlib.import_module(module), attr)
        ep = registered(kind).get(name)
        if ep is None:
            raise UserError(f"no {kind} named {name!r}: none is built in or registered ({names(kind) or 'no plugins installed'})")
        return ep.load()
    except (ImportError, AttributeError) as e:
        raise UserError(f"{kind} {name!r} could not be loaded: {type(e).__name__}: {e}") from None


def names(kind: str) -> list[str]:
    return sorted(registered(kind))


def require_known(kind: str, name: str, builtin, unknown: str, path_form: str, check) -> None:
    """For a config validator: a ValueError unless ``name`` is built in, registered, or a path that
    loads; ``check(obj)`` says what is wrong with what it loaded (None: nothing)."""
    if name in builtin:
        return
    if not is_path(name) and name not in registered(kind):
        plugins = f"; plugins: {', '.join(names(kind))}" if names(kind) else ""
        raise ValueError(f"{unknown} {name!r} (built in: {', '.join(builtin)}{plugins}; or a '{path_form}' path)")
    try:
        problem = check(load(kind, name))
    except UserError as e:
        raise ValueError(str(e)) from None
    if problem:
        raise ValueError(problem)
