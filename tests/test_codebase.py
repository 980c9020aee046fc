"""The codebase's own rules that its linters do not check: what a user imports first stays light, no
module imports another's private names, every config setting is marked content or operational
(that each is used or refused is tests/test_settings.py's audit). Ruff, mypy and import-linter's
contracts run before the tests (scripts/lint.sh)."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT

PACKAGE = ROOT / "llmdistill"
# What a user starts first must stay light: no torch, transformers, TRL, vLLM or datasets at import.
HEAVY = ("torch", "transformers", "trl", "vllm", "datasets")
LIGHT_ENTRY_POINTS = [
    "import llmdistill",
    "import llmdistill as ld; ld.load_config; ld.run",
    "import llmdistill.cli",
    "import llmdistill.stages.filter",
    "import llmdistill.config, llmdistill.outputs, llmdistill.answers",
]


def test_entry_points_import_without_the_heavy_engines():
    """One interpreter per entry point (the layering itself is import-linter's, in CI)."""
    code = "import sys; {}; print(sorted(m for m in {!r} if m in sys.modules))"
    for entry in LIGHT_ENTRY_POINTS:
        r = subprocess.run([sys.executable, "-c", code.format(entry, HEAVY)], cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stdout.strip() == "[]", f"{entry!r} imports {r.stdout.strip()}"


def test_no_module_imports_another_modules_private_names():
    pattern = re.compile(r"from llmdistill(\.[a-z_]+)+ import [^\n]*\b_[a-zA-Z]")
    hits = [
        f"{f.relative_to(ROOT)}: {m.group(0)}"
        for d in ("llmdistill", "scripts", "tests")
        for f in (ROOT / d).rglob("*.py")
        for m in pattern.finditer(f.read_text())
    ]
    assert not hits, hits


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

    unmarked = [
        f"{section.__name__}.{name}" for section, name in _fields() if role(section.model_fields[name]) not in (CONTENT, OPERATIONAL)
    ]
    assert not unmarked, unmarked
