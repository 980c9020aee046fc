"""Never lose or duplicate a teacher's work, against a local OpenAI-compatible server that fails
on purpose (tests/fake_openai.py) and real `llmdistill generate` processes killed with SIGKILL:
resumes keep every finished trace whatever operational setting changed, one process writes a
stage at a time, a bad reply ends the stage with one line, and the API key is written nowhere."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
import yaml

from llmdistill.jsonl import read_rows
from llmdistill.records import Trace
from tests.conftest import ROOT, write_jsonl
from tests.fake_openai import FakeOpenAIServer, answer_for
from tests.processes import kill_at_lines, lines, start_cli

pytestmark = pytest.mark.slow
N = 120
SECRET = "sk-test-SECRET-4711"


@pytest.fixture
def chaos():
    servers = []

    def make(**kw) -> FakeOpenAIServer:
        servers.append(FakeOpenAIServer(reply="answer", **kw))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def _config(tmp_path, url: str, **teacher) -> tuple[str, object]:
    problems = [
        {
            "id": f"p{i:03d}",
            "question": f"Tom has {i} pens and gets {i % 7 + 1} more. How many pens does he have?",
            "answer": str(i + i % 7 + 1),
        }
        for i in range(N)
    ]
    write_jsonl(tmp_path / "data" / "train.jsonl", problems)
    cfg = {
        "output_dir": str(tmp_path / "run"),
        "data": {
            "path": str(tmp_path / "data"),
            "prompt": str(ROOT / "prompts" / "arithmetic_cot.yaml"),
            "num_shots": 0,
            "prompt_format": "chat",
        },
        "teacher": {
            "model_name_or_path": "chaos-teacher",
            "backend": "openai",
            "base_url": url,
            "api": "chat",
            "concurrency": 8,
            "timeout_s": 0.4,
            "max_retries": 12,
            "backoff_s": 0.01,
            "batch_size": 8,
            **teacher,
        },
        "generate": {"max_new_tokens": 64},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path), tmp_path / "run" / "generate" / "traces.jsonl"


def _start(config: str, *extra: str) -> subprocess.Popen:
    return start_cli("generate", config, *extra, env={**os.environ, "OPENAI_API_KEY": SECRET})


def _check_complete(traces) -> list[Trace]:
    rows = read_rows(traces, Trace)  # every line parses: no torn or interleaved line
    keys = [r.key for r in rows]
    assert len(keys) == N and len(set(keys)) == N, (len(keys), len(set(keys)))  # none missing, no duplicate
    assert all(r.completion == answer_for(r.question) for r in rows)  # every completion answers its own prompt
    return rows


def test_faults_and_three_sigkills_then_resume_lose_nothing(tmp_path, chaos):
    server = chaos(fault_rate=0.3, latency_s=0.03, hang_s=1.0, seed=1)
    config, traces = _config(tmp_path, server.url)
    for at in (10, 40, 75):
        kill_at_lines(_start(config), traces, at)
    done = _start(config)
    _out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err[-3000:]
    _check_complete(traces)
    assert all(server.injected[f] > 0 for f in server.injected), server.injected  # every kind of fault was served
    assert server.auth == {f"Bearer {SECRET}"}
    written = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert written and not [p for p in written if SECRET in p.read_text(errors="ignore")]  # the key is stored nowhere


def test_sigkill_then_resume_with_operational_changes_keeps_every_row(tmp_path, chaos):
    """A resume under other operational settings (all four at once: that they leave the stage's
    identity alone is tests/outputs/test_identity.py's) keeps every row the killed run wrote."""
    server = chaos(fault_rate=0.1, latency_s=0.03, seed=2)
    config, traces = _config(tmp_path, server.url)
    kill_at_lines(_start(config), traces, 30)
    before = {(r.id, r.sample): r for r in read_rows(traces, Trace)}
    assert len(before) >= 24
    changes = ["teacher.concurrency=16", "teacher.max_retries=9", "teacher.timeout_s=0.5", "teacher.batch_size=5"]
    done = _start(config, *[a for c in changes for a in ("--set", c)])
    _out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err[-3000:]
    after = {r.key: r for r in _check_complete(traces)}
    assert all(after[k] == r for k, r in before.items())  # not one earlier row lost or rewritten


def test_a_second_writer_exits_2_and_leaves_the_file_intact(tmp_path, chaos):
    server = chaos(latency_s=0.1)
    config, traces = _config(tmp_path, server.url)
    first = _start(config)
    deadline = time.time() + 60
    while lines(traces) < 8 and time.time() < deadline:
        time.sleep(0.02)
    t0 = time.time()
    second = _start(config)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 2 and time.time() - t0 < 15
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"pid {first.pid}" in errors[0] and "being written by another process" in errors[0], err
    _out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    _check_complete(traces)


def test_an_html_reply_ends_the_stage_with_one_line_and_keeps_the_rows(tmp_path, chaos):
    server = chaos(html_after=20)
    config, traces = _config(tmp_path, server.url, max_retries=2)
    proc = _start(config)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "<html>" in errors[0] and "Traceback" not in err, err[-3000:]
    kept = read_rows(traces, Trace)
    assert 8 <= len(kept) < N
    server.html_after = 0  # the proxy recovers: the rerun finishes the rest
    done = _start(config)
    _out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err[-3000:]
    rows = {r.key: r for r in _check_complete(traces)}
    assert all(rows[r.key] == r for r in kept)


def test_two_endpoints_one_failing_half_its_requests_complete_the_stage_and_count_the_failures(tmp_path, chaos):
    """teacher.base_url as a list: the run completes with every trace right, and generate/stats.json
    counts each endpoint's requests and failures."""
    import json

    from llmdistill.config.file import load_config
    from llmdistill.stages.generate.run import generate

    flaky, healthy = chaos(fault_rate=0.5, hang_s=0.5), chaos()
    config, traces = _config(tmp_path, flaky.url, base_url=[flaky.url, healthy.url])
    generate(load_config(config))
    _check_complete(traces)
    endpoints = json.loads((tmp_path / "run" / "generate" / "stats.json").read_text())["backend"]["endpoints"]
    assert set(endpoints) == {flaky.url.rstrip("/"), healthy.url.rstrip("/")}
    assert endpoints[flaky.url.rstrip("/")]["failures"] > 0 and endpoints[healthy.url.rstrip("/")]["failures"] == 0
    assert sum(e["requests"] for e in endpoints.values()) >= N


def test_a_request_that_fails_for_good_keeps_the_rest_of_its_batch(tmp_path, chaos):
    """One request of the second batch fails after every retry: the other seven of that batch
    were paid for and are on disk, the stage ends with one line (exit 2), and a rerun against a
    recovered server asks only for what is missing."""
    server = chaos(latency_s=0.05, fail_questions=("Tom has 10 pens",))
    config, traces = _config(tmp_path, server.url, max_retries=2)
    proc = _start(config)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "HTTP 500" in errors[0], err[-3000:]
    kept = read_rows(traces, Trace)
    assert sorted(r.id for r in kept) == [f"p{i:03d}" for i in range(16) if i != 10]
    server.fail_questions = ()
    requests_before = server.requests
    done = _start(config)
    _out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err[-3000:]
    _check_complete(traces)
    assert server.requests - requests_before == N - 15
