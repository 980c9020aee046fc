"""Real `llmdistill` processes for the crash tests: start one, and SIGKILL it at a chosen moment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def start_cli(*args: str, env: dict | None = None, quiet: bool = False, module: str = "llmdistill.cli") -> subprocess.Popen:
    """``python -m llmdistill.cli ARGS`` from the repository root (stdout and stderr piped, or dropped with ``quiet``)."""
    out = subprocess.DEVNULL if quiet else subprocess.PIPE
    return subprocess.Popen([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, env=env, stdout=out, stderr=out, text=True)


def lines(path: Path) -> int:
    """Newline-terminated lines in ``path`` (0 while it does not exist)."""
    return path.read_bytes().count(b"\n") if path.exists() else 0


def kill_when(
    proc: subprocess.Popen, ready: Callable[[], bool], timeout_s: float = 120, before_kill: Callable[[], None] | None = None
) -> None:
    """SIGKILL ``proc`` as soon as ``ready()``; the process must still be running then (else the
    test would prove nothing about a crash). ``before_kill``: what to note first (its children)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.01)
    assert proc.poll() is None, f"the process ended before it could be killed: {(proc.communicate()[1] or '')[-2000:]}"
    if before_kill is not None:
        before_kill()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def kill_at_lines(
    proc: subprocess.Popen, path: Path, n: int, timeout_s: float = 120, before_kill: Callable[[], None] | None = None
) -> None:
    """SIGKILL ``proc`` once ``path`` holds ``n`` complete lines."""
    kill_when(proc, lambda: lines(path) >= n, timeout_s, before_kill)
