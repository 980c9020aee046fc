"""Generate in bounded memory (issue 29) writes what the in-memory generate wrote: the same traces
and statistics, on SVAMP's replayed PaLM traces and on a synthetic corpus (3,000 problems, two
samples each, rationalization), whole and resumed after a SIGKILL. The expected results were
written by the implementation before it streamed (``scale_cases.py`` run on commit d82501a)."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import ROOT
from tests.processes import kill_when, lines
from tests.stages.generate import scale_cases

EXPECTED = json.loads((ROOT / "tests" / "fixtures" / "generate" / "before_streaming.json").read_text())


@pytest.mark.parametrize("spill", [None, 300], ids=["in-memory", "on-disk"])  # the index's hashes held, or spilled by bucket
@pytest.mark.parametrize("name", ["svamp", "synthetic"])
def test_the_streaming_stage_writes_what_the_in_memory_one_wrote(name, spill, tmp_path):
    assert scale_cases.run(name, tmp_path / "run", spill) == EXPECTED[name]


def test_a_run_killed_midway_and_resumed_writes_the_same(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        scale_cases.command("synthetic", out, spill=300),
        cwd=ROOT,
        env=scale_cases.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    kill_when(proc, lambda: lines(out / "generate" / "traces.jsonl") >= 2500)
    subprocess.run(
        scale_cases.command("synthetic", out, spill=300), cwd=ROOT, env=scale_cases.env(), check=True, capture_output=True, timeout=900
    )
    resumed = scale_cases.result(out)
    assert resumed == EXPECTED["synthetic"]
