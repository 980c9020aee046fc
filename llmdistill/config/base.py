"""The base of every config section, and the two kinds of setting it holds.

Every field is marked, in the schema itself, as one of:

- ``content``: it changes what a stage writes (the model, the prompt, sampling, every training
  hyperparameter...). Stage identity -- what a rerun may reuse -- is the content fields alone.
- ``operational``: it changes only how the work gets done (batch sizes for inference, concurrency,
  timeouts, retries, endpoints, devices, logging and saving cadence). Changing one never
  invalidates finished work.

A new field must choose: ``tests/test_codebase.py`` fails on an unmarked one.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import PydanticUndefined

CONTENT, OPERATIONAL = "content", "operational"


def content(default: Any = PydanticUndefined, **kwargs) -> Any:
    """A field that changes what a stage writes: part of the stage's identity."""
    return Field(default, json_schema_extra={"role": CONTENT}, **kwargs)


def operational(default: Any = PydanticUndefined, **kwargs) -> Any:
    """A field that changes how the work gets done, never what it produces."""
    return Field(default, json_schema_extra={"role": OPERATIONAL}, **kwargs)


def role(field) -> str | None:
    return (field.json_schema_extra or {}).get("role") if isinstance(field.json_schema_extra, dict) else None


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def changed_fields(self) -> set[str]:
        """Fields given a value other than their default (a resolved config.yaml repeats every
        default: those must not count as a choice)."""
        fields = type(self).model_fields
        return {k for k in self.model_fields_set if k in fields and getattr(self, k) != fields[k].get_default(call_default_factory=True)}

    def refuse_unread(self, section: str, reads: set[str], why: str) -> None:
        """A ValueError naming the changed fields outside ``reads``: settings that would be ignored."""
        unread = sorted(self.changed_fields() - reads)
        if unread:
            names = ", ".join(f"{section}.{k}" for k in unread)
            raise ValueError(f"{names} {'is' if len(unread) == 1 else 'are'} not read {why}; remove {'it' if len(unread) == 1 else 'them'}")
