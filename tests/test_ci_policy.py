"""Under CI=true a missing engine fails its tests and an unexplained skip fails the run; on a
developer's machine both are skips with the reason."""

import os
import subprocess
import sys

from tests.conftest import ROOT

PROBE = """
import pytest
from tests.ci_policy import require

def test_needs_an_engine():
    require("an_engine_that_is_not_installed")

def test_skips_for_no_reason():
    pytest.skip("not today")

def test_runs():
    pass
"""


def _pytest(tmp_path, ci: str) -> subprocess.CompletedProcess:
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {**os.environ, "CI": ci, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.ci_policy", "-p", "no:cacheprovider", "-rs", str(tmp_path / "test_probe.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_under_ci_a_missing_engine_fails_and_a_skip_needs_a_reason(tmp_path):
    ci = _pytest(tmp_path, "true")
    assert ci.returncode == 1, ci.stdout
    assert "1 failed, 1 passed, 1 skipped" in ci.stdout and "CI must run this test: an_engine_that_is_not_installed" in ci.stdout
    assert "1 skipped test(s) not explained" in ci.stdout and "test_skips_for_no_reason: " in ci.stdout
    local = _pytest(tmp_path, "")
    assert local.returncode == 0 and "1 passed, 2 skipped" in local.stdout, local.stdout
    assert "an_engine_that_is_not_installed is not installed" in local.stdout
