"""The teacher-work table of issue 19, measured: the 800 SVAMP train problems through a local
fault-injecting OpenAI-compatible server (tests/fake_openai.py) and real `llmdistill generate`
processes, killed with SIGKILL, resumed with changed settings, run twice at once, and fed an HTML
reply. Prints one row per case: rows, unique (id, sample) pairs, duplicates, earlier rows lost,
completions that do not answer their own prompt, and the exit codes.

    .venv/bin/python scripts/check_resume.py [--problems 800]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SECRET = "sk-check-resume-SECRET"


def write_config(out: Path, url: str, problems: int) -> tuple[str, Path]:
    base = yaml.safe_load((ROOT / "configs" / "svamp_palm.yaml").read_text())
    data = {
        **base["data"],
        "path": str(ROOT / base["data"]["path"]),
        "prompt": str(ROOT / base["data"]["prompt"]),
        "num_shots": 0,
        "prompt_format": "chat",
        "max_train": problems,
    }
    cfg = {
        "output_dir": str(out / "run"),
        "data": data,
        "teacher": {
            "model_name_or_path": "chaos-teacher",
            "backend": "openai",
            "base_url": url,
            "concurrency": 8,
            "timeout_s": 0.4,
            "max_retries": 12,
            "backoff_s": 0.01,
            "batch_size": 16,
        },
        "generate": {"max_new_tokens": 64},
    }
    (out / "config.yaml").write_text(yaml.safe_dump(cfg))
    return str(out / "config.yaml"), out / "run" / "generate" / "traces.jsonl"


def start(config: str, *extra: str) -> subprocess.Popen:
    from tests.processes import start_cli

    return start_cli("generate", config, *extra, env={**os.environ, "OPENAI_API_KEY": SECRET})


def rows_of(traces: Path) -> list:
    from llmdistill.jsonl import read_rows
    from llmdistill.records import Trace

    return read_rows(traces, Trace)


def summary(name: str, traces: Path, before: list, codes: list[int], note: str = "") -> dict:
    from tests.fake_openai import answer_for

    rows = rows_of(traces)
    keys = [r.key for r in rows]
    now = {r.key: r for r in rows}
    lost = sum(now.get(r.key) != r for r in before)
    wrong = sum(r.completion != answer_for(r.question) for r in rows)
    leaked = sum(SECRET in p.read_text(errors="ignore") for p in traces.parents[1].rglob("*") if p.is_file())
    return {
        "case": name,
        "rows": len(rows),
        "unique": len(set(keys)),
        "duplicates": len(keys) - len(set(keys)),
        "lost": lost,
        "mismatched": wrong,
        "key_in_files": leaked,
        "exit codes": " ".join(map(str, codes)),
        "note": note,
    }


def main(args) -> None:
    from tests.fake_openai import FakeOpenAIServer
    from tests.processes import kill_at_lines, lines

    results = []
    with tempfile.TemporaryDirectory() as tmp:

        def case(name: str, **server_kw):
            out = Path(tmp) / name.replace(" ", "_")[:40]
            out.mkdir()
            server = FakeOpenAIServer(reply="answer", **server_kw)
            config, traces = write_config(out, server.url, args.problems)
            return server, config, traces

        server, config, traces = case("faults", fault_rate=0.3, latency_s=0.02, hang_s=1.0, seed=1)
        for at in (args.problems // 8, args.problems // 3, args.problems // 2):
            kill_at_lines(start(config), traces, at)
        done = start(config)
        done.communicate()
        results.append(summary("30% faults, 3 SIGKILLs, then resume", traces, [], [done.returncode], f"faults served: {server.injected}"))
        server.close()

        for change in ("teacher.concurrency=16", "teacher.max_retries=3"):
            server, config, traces = case(change, latency_s=0.02)
            kill_at_lines(start(config), traces, args.problems // 3)
            before = rows_of(traces)
            done = start(config, "--set", change)
            done.communicate()
            results.append(
                summary(f"SIGKILL, then resume with {change}", traces, before, [done.returncode], f"{len(before)} rows before the resume")
            )
            server.close()

        server, config, traces = case("two writers", latency_s=0.05)
        first = start(config)
        while lines(traces) < 16:
            time.sleep(0.01)
        t0 = time.time()
        second = start(config)
        _, err2 = second.communicate()
        took = time.time() - t0
        first.communicate()
        msg = next((line for line in err2.splitlines() if line.startswith("error:")), "")
        results.append(
            summary(
                "two generate processes on one output_dir",
                traces,
                [],
                [first.returncode, second.returncode],
                f"second exited after {took:.1f} s (process start included): {msg[:110]}",
            )
        )
        server.close()

        server, config, traces = case("html", html_after=40)
        proc = start(config, "--set", "teacher.max_retries=2")
        _, err = proc.communicate()
        kept = rows_of(traces)
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        server.html_after = 0
        done = start(config)
        done.communicate()
        results.append(
            summary(
                "HTML reply (a proxy's error page), then resume",
                traces,
                kept,
                [proc.returncode, done.returncode],
                f"{len(errors)} error line, {'no' if 'Traceback' not in err else 'a'} traceback, {len(kept)} rows kept: {errors[0][:100] if errors else ''}",
            )
        )
        server.close()

    cols = list(results[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in results:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--problems", type=int, default=800)
    main(p.parse_args())
