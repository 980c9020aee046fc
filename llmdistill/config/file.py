"""Reading and writing run config files: YAML, ``--set section.key=value`` overrides, and
validation errors as one line that names the key and the allowed ones."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import yaml
from pydantic import BaseModel, ValidationError

from llmdistill.atomic import write_text
from llmdistill.config.filter import FilterConfig
from llmdistill.config.root import Config
from llmdistill.errors import UserError


def _parse_value(text: str):
    """Parse an override value as YAML, so `--set train.max_steps=2` gives an int."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected section.key=value")
        dotted, value = item.split("=", 1)
        keys = dotted.strip().split(".")
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise UserError(f"--set {item!r}: {k} is not a section")
        node[keys[-1]] = _parse_value(value)
    return raw


def _format_validation_error(e: ValidationError, model: type[BaseModel] | None = None) -> str:
    msgs = []
    for err in e.errors():
        loc = [str(p) for p in err["loc"]]
        key = ".".join(loc) or "config"
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1])
            msgs.append(f"unknown key '{key}' (allowed: {', '.join(allowed)})")
        elif err["type"] == "missing":
            msgs.append(f"missing required key '{key}'")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            msgs.append(f"{key}: {msg}" if loc else msg)
    return "invalid config: " + "; ".join(msgs)


def section_model(annotation) -> type[BaseModel] | None:
    """The section model inside an annotation such as ``Section``, ``Section | None`` or ``list[Section]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = section_model(arg)
        if found is not None:
            return found
    return None


def _allowed_keys(section_path: list[str]) -> list[str]:
    model: type[BaseModel] = Config
    for part in section_path:
        if part.isdigit():  # an item of a list of sections
            continue
        field = model.model_fields.get(part)
        section = section_model(field.annotation) if field is not None else None
        if section is None:
            return []
        model = section
    return list(model.model_fields)


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read, override and validate a run config; every failure is a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise UserError(f"{path}{where}: malformed YAML ({getattr(e, 'problem', None) or e})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of sections at the top level")
    raw = apply_overrides(raw, overrides or [])
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise UserError(f"{path}: {_format_validation_error(e)}") from None


def upgrade_saved(raw: dict) -> dict:
    """A resolved config saved by an earlier version (a stage folder's ``config.yaml``), in this
    version's settings with the same meaning. Only saved configs are upgraded: a user's own file
    with a removed setting is refused with what replaced it."""
    if isinstance(raw.get("filter"), dict):
        raw = {**raw, "filter": FilterConfig.upgrade_saved(raw["filter"])}
    return raw


def save_config(cfg: Config, path: str | Path) -> None:
    write_text(path, yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
