"""Benchmark teacher generation: transformers vs vLLM (with and without prefix caching).

The same 64 two-shot chain-of-thought prompts (a shared few-shot prefix) go through each
backend, greedy, in one run; each arm runs in its own process so engines do not share memory.
Reports output tokens/s, the ratio to transformers, engine start-up, and where the time goes
(prefill: a 1-token pass over 64 other prompts of the same shape, so no arm reuses a cached
prompt from the timed pass; decode: the rest). Only the shared few-shot prefix can be cached.

    python scripts/bench_generate.py [--model models/SmolLM2-135M-Instruct] [--prompts 64] [--max-new-tokens 96]

``--ray`` benchmarks ``generate.engine: ray`` instead, through the whole generate stage (each arm
in its own process, each paying its own Ray start-up): the transformers teacher on ``--prompts``
problems in one local process, on 1 Ray replica with every core, and on 2 replicas with half the
cores each; and Ray's overhead per request, from the replay teacher (no compute) on the SVAMP
train split, local against 2 replicas at 8 and at 800 problems (the difference of the two
differences, so start-up cancels out).

    python scripts/bench_generate.py --ray [--prompts 64] [--max-new-tokens 48]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARMS = {
    "transformers": {"backend": "transformers"},
    "vllm": {"backend": "vllm", "enable_prefix_caching": True},
    "vllm-no-prefix-cache": {"backend": "vllm", "enable_prefix_caching": False},
}


def run_arm(arm: str, args) -> dict:
    sys.path.insert(0, str(ROOT))
    from llmdistill.backends import Request, SamplingParams, get_backend
    from llmdistill.config import DataConfig
    from llmdistill.data import load_problems
    from llmdistill.prompts import build_prompt, load_prompt

    template = load_prompt(ROOT / "prompts" / "arithmetic_cot.yaml")
    problems = load_problems(DataConfig(path=str(ROOT / "data" / "quickstart"), max_train=2 * args.prompts + 2), "train")
    all_requests = [Request(id=p.id, index=i, prompt=build_prompt(template, p.question, 2, chat=True)) for i, p in enumerate(problems)]
    warmup, requests, others = all_requests[:2], all_requests[2 : 2 + args.prompts], all_requests[2 + args.prompts :]
    kw = dict(ARMS[arm])
    t0 = time.perf_counter()
    backend = get_backend(kw.pop("backend"), model_name_or_path=args.model, dtype="float32", batch_size=args.batch_size, **kw)
    startup = time.perf_counter() - t0
    stop = template.stop
    backend.generate(warmup, SamplingParams(max_new_tokens=2, stop=stop))  # warm-up, not timed
    t0 = time.perf_counter()
    out = backend.generate(requests, SamplingParams(max_new_tokens=args.max_new_tokens, stop=stop))
    total = time.perf_counter() - t0
    t0 = time.perf_counter()
    backend.generate(others, SamplingParams(max_new_tokens=1, stop=stop))
    prefill = time.perf_counter() - t0
    tokens = sum(o[0].completion_tokens for o in out)
    return {
        "arm": arm,
        "startup_s": round(startup, 1),
        "generate_s": round(total, 2),
        "output_tokens": tokens,
        "prompt_tokens": sum(o[0].prompt_tokens for o in out),
        "output_tokens_per_s": round(tokens / total, 1),
        "prefill_s": round(prefill, 2),
        "decode_s": round(total - prefill, 2),
    }


RAY_ARMS = {  # name: (teacher, engine settings)
    "transformers local": ("transformers", {"engine": "local"}),
    "transformers ray x1": ("transformers", {"engine": "ray", "ray": {"replicas": 1, "num_cpus_per_replica": os.cpu_count()}}),
    "transformers ray x2": ("transformers", {"engine": "ray", "ray": {"replicas": 2, "num_cpus_per_replica": os.cpu_count() / 2}}),
    "replay local 8": ("replay", {"engine": "local"}),
    "replay ray x2 8": ("replay", {"engine": "ray", "ray": {"replicas": 2, "num_cpus_per_replica": 1}}),
    "replay local 800": ("replay", {"engine": "local"}),
    "replay ray x2 800": ("replay", {"engine": "ray", "ray": {"replicas": 2, "num_cpus_per_replica": 1}}),
}


def run_ray_arm(arm: str, args) -> dict:
    """One arm of --ray: the generate stage on a fresh output folder, timed whole."""
    import tempfile

    import yaml

    sys.path.insert(0, str(ROOT))
    from llmdistill.config.file import load_config
    from llmdistill.stages.generate.run import generate

    teacher, engine = RAY_ARMS[arm]
    out = tempfile.mkdtemp(prefix="bench_ray_")
    if teacher == "replay":
        cfg = yaml.safe_load((ROOT / "configs" / "svamp_palm.yaml").read_text())
        cfg["data"]["max_train"] = int(arm.rsplit(" ", 1)[1])
        for k in ("train", "evaluate"):
            cfg.pop(k, None)
    else:
        cfg = {
            "data": {
                "path": str(ROOT / "data" / "quickstart"),
                "prompt": str(ROOT / "prompts" / "arithmetic_cot.yaml"),
                "num_shots": 2,
                "max_train": args.prompts,
            },
            "teacher": {"model_name_or_path": args.model, "backend": "transformers", "batch_size": args.batch_size, "dtype": "float32"},
            "generate": {"max_new_tokens": args.max_new_tokens},
        }
    cfg["output_dir"] = out
    cfg["generate"] = {**cfg.get("generate", {}), **engine}
    (Path(out) / "config.yaml").write_text(yaml.safe_dump(cfg))
    os.chdir(ROOT)  # the replay config's paths are relative to the repository
    t0 = time.perf_counter()
    stats = generate(load_config(Path(out) / "config.yaml"))
    seconds = time.perf_counter() - t0
    return {
        "arm": arm,
        "problems": stats["problems"],
        "traces": stats["traces"],
        "output_tokens": stats["completion_tokens"],
        "stage_s": round(seconds, 2),
        "output_tokens_per_s": round(stats["completion_tokens"] / seconds, 1),
    }


def run_arms(flag: str, arms: list[str], args) -> dict[str, dict]:
    """Each arm in a process of its own, one after the other; an arm that fails is reported and skipped."""
    results = {}
    for arm in arms:
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                flag,
                arm,
                "--model",
                args.model,
                "--prompts",
                str(args.prompts),
                "--max-new-tokens",
                str(args.max_new_tokens),
                "--batch-size",
                str(args.batch_size),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
        )
        line = [x for x in proc.stdout.splitlines() if x.startswith("{")]
        if proc.returncode or not line:
            print(f"{arm} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
            continue
        results[arm] = json.loads(line[-1])
        print(f"done: {results[arm]}", file=sys.stderr)
    return results


def ray_main(args) -> None:
    results = run_arms("--ray-arm", RAY_ARMS, args)
    print(f"\n{date.today()} · {platform.node() or 'host'} · {os.cpu_count()} CPUs · the whole generate stage, start-up included\n")
    print("| arm | problems | traces | output tokens | stage s | output tok/s |")
    print("|---|---|---|---|---|---|")
    for r in results.values():
        print(f"| {r['arm']} | {r['problems']} | {r['traces']} | {r['output_tokens']} | {r['stage_s']} | {r['output_tokens_per_s']} |")
    t = {k: v["stage_s"] for k, v in results.items()}
    if {"transformers ray x1", "transformers ray x2"} <= t.keys():
        print(
            f"\n2 replicas against 1: {t['transformers ray x1'] / t['transformers ray x2']:.2f}x the speed"
            + (
                f"; 1 replica against the local engine: {t['transformers local'] / t['transformers ray x1']:.2f}x"
                if "transformers local" in t
                else ""
            )
        )
    keys = ["replay local 8", "replay ray x2 8", "replay local 800", "replay ray x2 800"]
    if set(keys) <= t.keys():
        per = ((t[keys[3]] - t[keys[2]]) - (t[keys[1]] - t[keys[0]])) / 792
        print(f"Ray start-up (replay, 8 problems): {t[keys[1]] - t[keys[0]]:.1f} s; overhead per request beyond it: {1000 * per:.1f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def main(args) -> None:
    results = list(run_arms("--arm", args.arms, args).values())
    base = next((r for r in results if r["arm"] == "transformers"), None)
    print(
        f"\n{date.today()} · {platform.node() or 'host'} · {os.cpu_count()} CPUs · {args.prompts} prompts · max_new_tokens {args.max_new_tokens}\n"
    )
    print("| backend | start-up s | generate s | prefill s | decode s | output tokens | output tok/s | vs transformers |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        ratio = f"{r['output_tokens_per_s'] / base['output_tokens_per_s']:.2f}x" if base else "-"
        print(
            f"| {r['arm']} | {r['startup_s']} | {r['generate_s']} | {r['prefill_s']} | {r['decode_s']} | {r['output_tokens']} | {r['output_tokens_per_s']} | {ratio} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "SmolLM2-135M-Instruct"))
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16, help="transformers batch size")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    parser.add_argument("--ray", action="store_true", help="benchmark generate.engine ray (needs llmdistill[ray])")
    parser.add_argument("--ray-arm", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.arm:
        print(json.dumps(run_arm(args.arm, args)))
    elif args.ray_arm:
        print(json.dumps(run_ray_arm(args.ray_arm, args)))
    elif args.ray:
        ray_main(args)
    else:
        main(args)
