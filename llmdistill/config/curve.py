"""The ``curve`` section: test accuracy against the share of the teacher's traces a student trains on."""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from llmdistill.config.base import Section, operational


class CurveConfig(Section):
    """What ``llmdistill curve`` trains and evaluates (each also a command-line flag). A point
    (fraction, mode, seed) is a run of the config's own recipe in a folder of its own, so these
    settings choose which points exist; they change no stage's output."""

    # shares of the training problems (nested: a problem in the 25% subset is in the 50% one),
    # taken after the validation problems are held out of the whole split
    fractions: list[float] = operational([0.125, 0.25, 0.5, 1.0])
    modes: list[Literal["label", "cot", "step_by_step"]] = operational(["label", "step_by_step"])
    seeds: list[int] = operational([0])  # train.seed of each point
    # epochs: a fraction trains for as many epochs as the config's recipe does on every problem
    # (train.max_steps and eval_steps scaled by the subset's size); steps: for train.max_steps steps
    budget: Literal["epochs", "steps"] = operational("epochs")

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("curve.fractions is empty: give at least one share of the training problems, e.g. [0.25, 0.5, 1.0]")
        bad = [f for f in v if not 0 < f <= 1]
        if bad:
            raise ValueError(f"curve.fractions must be in (0, 1], got {bad[0]}")
        if len(set(v)) != len(v):
            raise ValueError(f"curve.fractions has a fraction twice: {v}")
        return sorted(v)

    @field_validator("modes", "seeds")
    @classmethod
    def _distinct(cls, v: list, info) -> list:
        if not v:
            raise ValueError(f"curve.{info.field_name} is empty")
        if len(set(v)) != len(v):
            raise ValueError(f"curve.{info.field_name} lists {v}: each at most once")
        return v
