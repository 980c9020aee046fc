"""Distil a large teacher LLM into a small student that reasons.

    import llmdistill as ld

    cfg = ld.load_config("configs/quickstart.yaml")
    result = ld.run(cfg)

The functions load on first use (``llmdistill.api``), so ``import llmdistill`` stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_API = ("load_config", "run", "generate", "filter", "train", "evaluate", "export", "curve", "results")
_RESULTS = ("RunResult", "GenerateResult", "FilterResult", "TrainResult", "EvaluateResult", "ExportResult")
_LAZY = {
    **dict.fromkeys(_API, "llmdistill.api"),
    **dict.fromkeys(_RESULTS, "llmdistill.result_types"),
    "UserError": "llmdistill.errors",
    "Config": "llmdistill.config",
}

if TYPE_CHECKING:
    from llmdistill.api import curve, evaluate, export, filter, generate, load_config, results, run, train  # noqa: F401
    from llmdistill.config import Config  # noqa: F401
    from llmdistill.errors import UserError  # noqa: F401
    from llmdistill.result_types import EvaluateResult, ExportResult, FilterResult, GenerateResult, RunResult, TrainResult  # noqa: F401


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'llmdistill' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["__version__", *_LAZY]
