"""generate.engine: ray -- the teacher backend in a Ray Data actor pool on a local 2-CPU cluster
writes exactly the traces the local engine writes (replay and transformers backends), and resumes
the same way."""

from __future__ import annotations

import pytest

from llmdistill.config.file import load_config
from llmdistill.jsonl import read_rows
from llmdistill.outputs import stage_dir
from llmdistill.records import Trace
from llmdistill.stages.generate.run import generate
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
SAME = (
    "id",
    "sample",
    "prompt",
    "completion",
    "finish_reason",
    "seed",
    "teacher",
    "backend",
    "template_hash",
    "sampling",
    "completion_tokens",
)


@pytest.fixture
def local_cluster(ray_cluster):
    """The session's local cluster (tests/engines.py)."""
    return ray_cluster


def _traces(path) -> list[tuple]:
    return sorted(
        tuple(getattr(t, k) if not isinstance(getattr(t, k), dict) else repr(getattr(t, k)) for k in SAME) for t in read_rows(path, Trace)
    )


def _both(config, tmp_path, overrides: list[str], ray_settings: list[str]):
    local = load_config(config, [f"output_dir={tmp_path / 'local'}", *overrides])
    remote = load_config(config, [f"output_dir={tmp_path / 'ray'}", "generate.engine=ray", *ray_settings, *overrides])
    generate(local)
    stats = generate(remote)
    return local, remote, stats


def test_ray_replay_writes_the_local_traces(local_cluster, tmp_path):
    config = ROOT / "configs" / "svamp_palm.yaml"
    local, remote, stats = _both(
        config, tmp_path, ["data.max_train=40", "teacher.batch_size=8"], ["generate.ray.replicas=2", "generate.ray.batch_size=6"]
    )
    want, got = _traces(stage_dir(local, "generate") / "traces.jsonl"), _traces(stage_dir(remote, "generate") / "traces.jsonl")
    assert len(got) == 40 and got == want
    assert stats["ray"]["replicas"] == 2 and stats["traces"] == 40


def test_ray_transformers_replicas_write_the_local_traces_and_resume(local_cluster, make_config, tmp_path):
    """Two replicas of a (tiny) transformers teacher, two samples a problem at temperature 1: the
    per-request seeds give the same traces as one local engine; a rerun after losing the last
    traces asks only for those."""
    config = make_config(teacher={"backend": "transformers", "batch_size": 2}, generate={"n": 2, "temperature": 1.0, "max_new_tokens": 6})
    local, remote, _ = _both(config, tmp_path, [], ["generate.ray.replicas=2", "generate.ray.batch_size=2"])
    path = stage_dir(remote, "generate") / "traces.jsonl"
    want = _traces(stage_dir(local, "generate") / "traces.jsonl")
    assert _traces(path) == want and len(want) == 12
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:7]) + lines[7][:20])  # a crash: 5 traces lost, the last line torn
    stats = generate(
        load_config(config, [f"output_dir={tmp_path / 'ray'}", "generate.engine=ray", "generate.ray.replicas=2"]), overwrite=False
    )
    assert _traces(path) == want and stats["problems_this_run"] == 3  # the problems with a missing sample


def test_ray_settings_need_the_ray_engine(make_config):
    from llmdistill.errors import UserError

    with pytest.raises(UserError, match="generate.ray is read with generate.engine: ray only"):
        load_config(make_config(generate={"ray": {"replicas": 4}}))


def test_a_killed_replica_is_restarted_and_the_run_completes(local_cluster, tmp_path):
    """SIGKILL one replica's process mid-run: Ray restarts it, its batch is asked again, and the
    stage ends with every trace once."""
    import os
    import signal
    import threading
    import time

    import psutil  # a dependency of trl and accelerate

    cfg = load_config(
        ROOT / "configs" / "svamp_palm.yaml",
        [f"output_dir={tmp_path}", "generate.engine=ray", "generate.ray.replicas=2", "generate.ray.batch_size=1", "teacher.batch_size=1"],
    )
    path, killed = stage_dir(cfg, "generate") / "traces.jsonl", []

    def kill_one_replica():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            if path.exists() and path.read_bytes().count(b"\n") >= 50:
                for p in psutil.process_iter(["cmdline"]):
                    if "TeacherActor" in " ".join(p.info["cmdline"] or []):
                        os.kill(p.pid, signal.SIGKILL)
                        killed.append(p.pid)
                        return
            time.sleep(0.005)

    killer = threading.Thread(target=kill_one_replica)
    killer.start()
    stats = generate(cfg)
    killer.join()
    assert killed, "no replica was found to kill"
    rows = read_rows(path, Trace)
    assert stats["traces"] == len(rows) == len({r.key for r in rows}) == 800


def test_sigkill_of_the_driver_then_rerun_equals_the_uninterrupted_run(local_cluster, tmp_path, tiny_model):
    """A real `llmdistill generate` driver process on the Ray engine (two transformers replicas on
    the running cluster it joins, as `address: auto` does), SIGKILLed once traces are on disk: the
    rerun asks only for the missing ``(id, sample)`` pairs and ends with exactly the traces of an
    uninterrupted local run."""
    import os
    import subprocess
    import sys

    import yaml

    from tests.processes import kill_at_lines, lines
    from tests.stages.generate.test_resume import generate_process, resume_config, traces_of

    killed = resume_config(tmp_path, tiny_model, "killed")
    spec = yaml.safe_load(killed.read_text())
    spec["generate"] |= {"engine": "ray", "ray": {"replicas": 2, "batch_size": 1}}
    killed.write_text(yaml.safe_dump(spec))
    traces = tmp_path / "killed" / "generate" / "traces.jsonl"
    env = {**os.environ, "RAY_ADDRESS": local_cluster}  # the session's cluster: the driver's replicas die with it
    kill_at_lines(generate_process(killed, env=env), traces, 6, timeout_s=240)
    partial = lines(traces)
    assert 6 <= partial < 60 and not (tmp_path / "killed" / "generate" / "stats.json").exists()

    rerun = subprocess.run(
        [sys.executable, "-m", "llmdistill.cli", "generate", str(killed)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    clean = resume_config(tmp_path, tiny_model, "clean")
    assert generate_process(clean).wait(timeout=300) == 0
    resumed = read_rows(traces, Trace)
    assert len(resumed) == 60 and len({t.key for t in resumed}) == 60  # none lost, none twice
    assert traces_of(traces) == traces_of(tmp_path / "clean" / "generate" / "traces.jsonl")
    stats = __import__("json").loads((tmp_path / "killed" / "generate" / "stats.json").read_text())
    assert 0 < stats["problems_this_run"] < 30  # the rerun asked only for what was missing
