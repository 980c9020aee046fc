"""The base of every config section: unknown keys are errors (``extra="forbid"``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


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
