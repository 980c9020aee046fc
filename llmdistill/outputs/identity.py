"""What a stage's output is: the content settings it was made with (see ``config.base``).

Every stage folder keeps the config it was made with (``config.yaml``). Its identity is the
content fields of the sections the stage reads (``STAGE_INPUTS``); operational fields never count.
Comparing the saved config with the current one, field by field, says what changed in words a
user can act on (``generate.temperature: 0.0 -> 0.7``), and works across versions that add
settings (a setting missing from an old config.yaml takes its default on both sides).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from llmdistill.config.base import CONTENT, Section, role

# Settings each stage reads, by section, and those that only choose *which* rows a stage covers:
# generate keeps every trace it wrote whatever data.max_train says (rows decide for themselves).
STAGE_INPUTS = {
    "generate": ["data", "teacher", "generate"],
    "filter": ["data", "teacher", "generate", "filter"],
    "train": ["data", "teacher", "generate", "filter", "student", "train", "kd"],
    "evaluate": ["data", "teacher", "generate", "filter", "student", "train", "kd", "evaluate"],
}
SELECTION = {"generate": {"data.max_train"}}
NOT_READ = {"generate": {"data.test_split", "data.max_test"}}  # the teacher never sees the test split here
# Read by generate only to find the problems to rationalize (answers are read again by the filter).
READ_TO_RATIONALIZE = {"data.answer_regex", "data.tolerance"}
# What shapes the untrained student's prompt in an evaluation without the trained student.
STUDENT_PROMPT = {"train.mode", "train.num_shots", "train.layout"}


def _flatten(model: BaseModel, prefix: str, out: dict) -> None:
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        path = f"{prefix}{name}"
        if isinstance(value, Section):
            _flatten(value, path + ".", out)
        elif isinstance(value, list) and value and all(isinstance(v, Section) for v in value):
            for i, v in enumerate(value):
                _flatten(v, f"{path}.{i}.", out)
        elif role(field) == CONTENT:
            out[path] = value.model_dump(mode="json") if isinstance(value, BaseModel) else json.loads(json.dumps(value, default=str))


def inputs(cfg, stage: str) -> list[str]:
    """The sections a stage's output depends on; an evaluation without the trained student does
    not depend on how it would be trained (nor on the student, without the untrained one)."""
    sections = STAGE_INPUTS[stage]
    if stage == "evaluate" and "student" not in cfg.evaluate.models:
        drop = {"filter", "kd"} | (set() if "student_init" in cfg.evaluate.models else {"student", "train"})
        sections = [s for s in sections if s not in drop]
    return sections


def content(cfg, stage: str, selection: bool = True) -> dict:
    """``{"generate.temperature": 0.7, ...}``: the content fields the stage's output depends on."""
    out: dict = {}
    for section in inputs(cfg, stage):
        _flatten(getattr(cfg, section), f"{section}.", out)
    drop = NOT_READ.get(stage, set()) | (set() if selection else SELECTION.get(stage, set()))
    if stage == "generate" and not cfg.generate.rationalize:
        drop |= READ_TO_RATIONALIZE
    if stage == "evaluate" and "student" not in cfg.evaluate.models:  # the untrained student's prompt only
        drop |= {k for k in out if k.startswith("train.") and k not in STUDENT_PROMPT}
    out["data.prompt:template_hash"] = _template_hash(cfg.data.prompt)  # the prompt file's contents, not only its path
    return {k: v for k, v in out.items() if k not in drop}


def _template_hash(path: str) -> str | None:
    from llmdistill.errors import UserError
    from llmdistill.prompts import load_prompt

    try:
        return load_prompt(path).hash
    except UserError:  # a missing prompt file fails where it is read, with its own message
        return None


def content_hash(cfg, stage: str) -> str:
    return hashlib.sha256(json.dumps(content(cfg, stage), sort_keys=True).encode()).hexdigest()[:16]


def saved_config(stage_dir: Path, schema: type[BaseModel] | None = None):
    """The Config a stage folder was made with; None when it has none. A config.yaml of an earlier
    version is read as this version would have written it (``upgrade_saved``), so an upgrade
    keeps finished stages complete; one that still does not validate is returned as the raw
    mapping. ``schema``: the config class to read it with (default ``Config``)."""
    from llmdistill.config import Config
    from llmdistill.config.file import upgrade_saved

    schema = schema or Config
    path = stage_dir / "config.yaml"
    if not path.is_file():
        return None
    raw = yaml.safe_load(path.read_text()) or {}
    raw = upgrade_saved(raw)
    try:
        return schema.model_validate(raw)
    except ValidationError:
        return raw


def changes(saved, cfg, stage: str, selection: bool = True) -> list[str]:
    """Content settings that differ between the saved config and ``cfg``, as 'key: old -> new'."""
    new = content(cfg, stage, selection)
    if isinstance(saved, dict):
        return ["the saved config.yaml no longer validates against this version's settings"]
    old = content(saved, stage, selection)
    return [f"{k}: {_short(old.get(k))} -> {_short(new.get(k))}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."
