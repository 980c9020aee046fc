"""The codebase's own rules, checked: modules import alone (no cycles) and stay small, no module
imports another's private names, heavy engines load only where used, and every config setting is
marked content or operational (that each is used or refused is tests/test_settings.py's audit)."""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from tests.conftest import ROOT

PACKAGE = ROOT / "llmdistill"
# Modules whose job is the heavy engine (torch, TRL, vLLM): everything else must import without it.
HEAVY = {"llmdistill.backends.hf", "llmdistill.backends.vllm", "llmdistill.train.trainers", "llmdistill.train.sft", "llmdistill.train.losses",
         "llmdistill.train.monitor"}


def _modules() -> list[str]:
    names = []
    for f in sorted(PACKAGE.rglob("*.py")):
        names.append(".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"))
    return names


def _import_alone(module: str) -> tuple[str, int, str]:
    code = f"import sys, {module}; print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    return module, r.returncode, (r.stdout.strip() if r.returncode == 0 else r.stderr.strip().splitlines()[-1])


def test_every_module_imports_alone_and_heavy_engines_stay_in_their_modules():
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(_import_alone, _modules()))
    failed = [(m, out) for m, rc, out in results if rc != 0]
    assert not failed, failed
    heavy = sorted(m for m, _, out in results if out == "True" and m not in HEAVY)
    assert not heavy, f"these modules import torch at import time: {heavy}"
    assert len(results) > 40


def test_no_module_imports_another_modules_private_names():
    pattern = re.compile(r"from llmdistill(\.[a-z_]+)+ import [^\n]*\b_[a-zA-Z]")
    hits = [f"{f.relative_to(ROOT)}: {m.group(0)}" for d in ("llmdistill", "scripts", "tests") for f in (ROOT / d).rglob("*.py")
            for m in pattern.finditer(f.read_text())]
    assert not hits, hits


def test_no_module_is_over_300_lines():
    long = {str(f.relative_to(ROOT)): n for f in PACKAGE.rglob("*.py") if (n := len(f.read_text().splitlines())) > 300}
    assert not long, long


def _fields() -> list[tuple[type, str]]:
    """(section class, field name) of every field of every config section, nested ones included."""
    from pydantic import BaseModel

    from llmdistill.config import Config, Section
    from llmdistill.config.file import section_model  # the walk the error messages use

    seen, out, todo = set(), [], [Config]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, field in model.model_fields.items():
            sub = section_model(field.annotation)
            if sub is not None and issubclass(sub, BaseModel):
                todo.append(sub)
            elif model is not Config:
                out.append((model, name))
    assert all(issubclass(m, Section) for m in seen)
    return out


def test_every_config_field_is_marked_content_or_operational():
    """A new setting must choose whether it changes what a stage writes (see config.base)."""
    from llmdistill.config.base import CONTENT, OPERATIONAL, role

    unmarked = [f"{section.__name__}.{name}" for section, name in _fields() if role(section.model_fields[name]) not in (CONTENT, OPERATIONAL)]
    assert not unmarked, unmarked
