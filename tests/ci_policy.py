"""What a CI run may skip: nothing it does not explain.

``require("vllm")`` skips a test on a developer's machine without the engine, but under ``CI=true``
a missing engine is a failure: a green CI must mean the engine's tests ran. Any other skip under
CI fails the session unless its reason is listed in ``EXPLAINED_SKIPS`` with why it is allowed.
"""

from __future__ import annotations

import importlib
import os

import pytest

# reason (a substring of the skip's message) -> why CI may skip it
EXPLAINED_SKIPS: dict[str, str] = {}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(module: str):
    """``module`` imported, or the test skipped (failed under CI) naming what is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        message = f"{module} is not installed ({e}); scripts/setup.sh installs it"
        if in_ci():
            pytest.fail(f"CI must run this test: {message}", pytrace=False)
        pytest.skip(message, allow_module_level=True)


_unexplained: list[str] = []  # this session's skips under CI that EXPLAINED_SKIPS does not cover


def pytest_runtest_logreport(report):
    if report.skipped and in_ci() and not hasattr(report, "wasxfail"):
        reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not any(k in reason for k in EXPLAINED_SKIPS):
            _unexplained.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session, exitstatus):
    if _unexplained and session.exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _unexplained:
        terminalreporter.write_line(
            f"CI=true: {len(_unexplained)} skipped test(s) not explained in tests/ci_policy.py EXPLAINED_SKIPS:", red=True
        )
        for line in _unexplained:
            terminalreporter.write_line(f"  {line}")
