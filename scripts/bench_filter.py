"""Benchmark the filter stage on a synthetic corpus with planted exact and near duplicates.

Measures, in one run: rows/s of the whole stage (JSONL in and out, every filter); rows/s of
parse + correct + exact dedup alone; the near-dup step (rensa MinHash-LSH) against a plain
datasketch MinHashLSH baseline on the same texts, with recall and precision on the planted
near-duplicates; and peak memory at several corpus sizes, in one process and with worker processes (``filter.workers``;
each setting in a process of its own, on the same corpus).

    python scripts/bench_filter.py [--rows 200000] [--sizes 200000 1000000 2000000] [--workers 0 auto] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from llmdistill.outputs.identity import content_hash

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VOCAB = [f"w{i}" for i in range(20000)]


def corpus(n: int, seed: int = 0) -> tuple[list[dict], set[int], set[int]]:
    """Traces with 4% exact duplicates (case changed) and 4% near duplicates (one word of ~70 changed)."""
    r = random.Random(seed)
    rows, exact, near, originals = [], set(), set(), []
    for i in range(n):
        a, b = r.randint(1, 999), r.randint(1, 999)
        kind = r.random()
        if i > 10 and kind < 0.04:  # exact: an earlier trace's text again, as another sample
            src = dict(rows[r.choice(originals)])
            src.update(sample=src["sample"] + 100 + i, completion=src["completion"].upper())
            rows.append(src)
            exact.add(i)
            continue
        if i > 10 and kind < 0.08:  # near: an earlier trace with one word of its story changed
            src = dict(rows[r.choice(originals)])
            words = src["completion"].split(" The answer is")[0].split()
            words[r.randrange(len(words) - 6)] = r.choice(VOCAB)
            src.update(
                sample=src["sample"] + 100 + i, completion=" ".join(words) + src["completion"][src["completion"].index(" The answer is") :]
            )
            rows.append(src)
            near.add(i)
            continue
        originals.append(i)
        story = " ".join(r.choice(VOCAB) for _ in range(60))
        ok = r.random() < 0.7
        answer = a + b if ok else a + b + r.randint(1, 9)
        completion = f"{story} so {a} + {b} = {answer}. The answer is {answer:,}.\n\nQ: an invented next question"
        rows.append(
            {
                "id": f"p{i}",
                "sample": 0,
                "question": f"Q{i}: what is {a} plus {b}? {story[:40]}",
                "answer": str(a + b),
                "prompt": "",
                "completion": completion,
                "finish_reason": "length" if r.random() < 0.02 else "stop",
            }
        )
    return rows, exact, near


def bench_config(tmp: Path):
    from llmdistill.config import Config

    return Config.model_validate(
        {
            "output_dir": str(tmp / "run"),
            "data": {"path": str(tmp / "data"), "prompt": str(ROOT / "prompts" / "arithmetic_cot.yaml")},
            "teacher": {"model_name_or_path": "synthetic"},
        }
    )


def make_run(tmp: Path, rows: list[dict]):
    """A run folder whose generate stage holds ``rows``, with the problems they answer."""
    from llmdistill.config.file import save_config

    cfg = bench_config(tmp)
    gen = tmp / "run" / "generate"
    gen.mkdir(parents=True, exist_ok=True)
    with open(gen / "traces.jsonl", "w") as fh:
        fh.writelines(json.dumps(row) + "\n" for row in rows)
    (tmp / "data").mkdir(exist_ok=True)
    with open(tmp / "data" / "train.jsonl", "w") as fh:  # the problems: the filter keeps the traces of the selected ones
        problems = {row["id"]: {"id": row["id"], "question": row["question"], "answer": row["answer"]} for row in rows}
        fh.writelines(json.dumps(p) + "\n" for p in problems.values())
    (tmp / "data" / "test.jsonl").write_text(
        json.dumps({"id": "t", "question": "how many apples are left in the basket now", "answer": "1"}) + "\n"
    )
    save_config(cfg, gen / "config.yaml")  # the generate stage's record, as the stage itself leaves it
    stats = {"stage": "generate", "config_hash": content_hash(cfg, "generate"), "run_id": "bench"}
    (gen / "stats.json").write_text(json.dumps(stats))
    return cfg


def bench_stage(n: int, tmp: str, workers: int | None) -> dict:
    """The whole stage on the n traces written in ``tmp`` (by another process, so this one's peak
    memory is the stage's own; its only children are the stage's workers)."""
    from llmdistill.stages.filter.run import filter_traces

    cfg = bench_config(Path(tmp))
    cfg.filter.workers = workers
    t0 = time.perf_counter()
    stats = filter_traces(cfg, overwrite=True)
    seconds = time.perf_counter() - t0
    return {
        "rows": n,
        "workers": stats["workers"],
        "stage_s": round(seconds, 2),
        "stage_rows_per_s": round(n / seconds),
        "kept": stats["kept"],
        "rejected_by": stats["rejected_by"],
        "funnel_s": {k: v["seconds"] for k, v in stats["funnel"].items()},
        "worker_cpu_s": stats["worker_cpu_seconds"],
        "peak_rss_mib": peak_rss_mib(),
        "worker_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
    }


def peak_rss_mib() -> int:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def bench_steps(n: int, threshold: float, shingle: int, num_perm: int, repeats: int = 5) -> dict:
    from llmdistill.answers.checking import check_trace
    from llmdistill.config import Config
    from llmdistill.stages.filter.dedup import near_duplicates, shingles
    from llmdistill.stages.filter.rules import FILTER_FUNCTIONS, correct, parse
    from llmdistill.stages.filter.run import gc_paused

    dedup_exact = FILTER_FUNCTIONS["dedup_exact"]
    from llmdistill.records import Trace

    rows, exact, near = corpus(n)
    cfg = Config.model_validate({"output_dir": "x", "data": {"path": "x"}, "teacher": {"model_name_or_path": "x"}})
    traces = [Trace.model_validate(r) for r in rows]
    stop = ["\n\nQ:", "\nQ:"]
    runs = []
    for _ in range(repeats):  # this machine is shared: report the best and the median of a few runs
        with gc_paused():  # as in the stage
            t0 = time.perf_counter()
            checked = [check_trace(t, stop, cfg.data) for t in traces]
            kept = [r for r, why in zip(checked, parse(checked, cfg)) if why is None]
            kept = [r for r, why in zip(kept, correct(kept, cfg)) if why is None]
            reasons = dedup_exact(kept, cfg)
            runs.append(time.perf_counter() - t0)
        del checked, kept
    fast_s, median_s = min(runs), sorted(runs)[len(runs) // 2]

    texts = [f"{r['question']} {r['completion'].split(' The answer is')[0]}" for r in rows]
    t0 = time.perf_counter()
    ours = set(near_duplicates(texts, threshold, shingle, num_perm))
    ours_s = time.perf_counter() - t0

    from datasketch import MinHash, MinHashLSH

    t0 = time.perf_counter()
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    hashes = MinHash.bulk([[s.encode() for s in shingles(t, shingle)] for t in texts], num_perm=num_perm)
    base = set()
    for i, mh in enumerate(hashes):
        if any(mh.jaccard(hashes[j]) >= threshold for j in lsh.query(mh)):
            base.add(i)
        else:
            lsh.insert(i, mh)
    base_s = time.perf_counter() - t0

    # Ground truth: planted copies whose true shingle Jaccard with their source is >= threshold
    # (exact copies always; a changed word costs up to `shingle` shingles). Near-dup detection on
    # raw text also (rightly) flags the exact copies.
    sets = [set(shingles(t, shingle)) for t in texts]
    first: dict[str, int] = {}
    for i, row in enumerate(rows):
        first.setdefault(row["id"], i)
    source = {i: first[rows[i]["id"]] for i in exact | near}
    truth = {i for i, j in source.items() if len(sets[i] & sets[j]) / len(sets[i] | sets[j]) >= threshold}

    def pr(found: set) -> tuple[float, float]:
        return round(len(found & truth) / max(len(found), 1), 4), round(len(found & truth) / len(truth), 4)

    (p_ours, r_ours), (p_base, r_base) = pr(ours), pr(base)
    return {
        "rows": n,
        "true_near_pairs": len(truth),
        "parse_correct_exact_s": round(fast_s, 2),
        "parse_correct_exact_rows_per_s": round(n / fast_s),
        "parse_correct_exact_median_rows_per_s": round(n / median_s),
        "repeats": repeats,
        "exact_dupes_found": sum(x is not None for x in reasons),
        "planted_exact": len(exact),
        "planted_near": len(near),
        "near_ours_s": round(ours_s, 2),
        "near_ours_rows_per_s": round(n / ours_s),
        "near_ours_precision": p_ours,
        "near_ours_recall": r_ours,
        "near_datasketch_s": round(base_s, 2),
        "near_datasketch_rows_per_s": round(n / base_s),
        "near_datasketch_precision": p_base,
        "near_datasketch_recall": r_base,
        "speedup_vs_datasketch": round(base_s / ours_s, 2),
    }


def main(args) -> None:
    results = {"date": str(date.today()), "host": platform.node(), "cpus": os.cpu_count()}
    results["steps"] = bench_steps(min(args.rows, args.steps_rows), 0.8, 5, 128, args.repeats)
    print(json.dumps(results["steps"]), file=sys.stderr)
    results["stage"] = []
    for n in sorted(set(args.sizes or [args.rows // 4, args.rows // 2, args.rows])):
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, __file__, "--write-corpus", str(n), tmp], check=True)
            for w in args.workers:  # each in a process of its own, on the same corpus
                proc = subprocess.run([sys.executable, __file__, "--stage-only", str(n), tmp, w], capture_output=True, text=True)
                if proc.returncode:
                    sys.exit(proc.stderr[-3000:])
                results["stage"].append(json.loads(proc.stdout.splitlines()[-1]))
                print(json.dumps(results["stage"][-1]), file=sys.stderr)
    s = results["steps"]
    print(
        f"\n{results['date']} · {results['cpus']} CPUs · steps: {s['rows']} synthetic traces ({s['planted_exact']} exact + {s['planted_near']} near duplicates planted)\n"
    )
    print("| step | seconds | rows/s | precision | recall |\n|---|---|---|---|---|")
    print(
        f"| parse + correct + exact dedup (best of {s['repeats']}; median {s['parse_correct_exact_median_rows_per_s']:,} rows/s) "
        f"| {s['parse_correct_exact_s']} | {s['parse_correct_exact_rows_per_s']:,} | - | - |"
    )
    print(
        f"| near dedup, rensa MinHash-LSH (ours) | {s['near_ours_s']} | {s['near_ours_rows_per_s']:,} | {s['near_ours_precision']} | {s['near_ours_recall']} |"
    )
    print(
        f"| near dedup, datasketch MinHashLSH | {s['near_datasketch_s']} | {s['near_datasketch_rows_per_s']:,} | {s['near_datasketch_precision']} | {s['near_datasketch_recall']} |"
    )
    print("\n| rows | workers | whole stage s | rows/s | peak RSS MiB, main + each worker |\n|---|---|---|---|---|")
    for st in results["stage"]:
        print(
            f"| {st['rows']:,} | {st['workers']} | {st['stage_s']} | {st['stage_rows_per_s']:,} | {st['peak_rss_mib']} + {st['worker_peak_rss_mib']} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5, help="runs of the parse + correct + exact dedup step")
    parser.add_argument("--json")
    parser.add_argument(
        "--workers", nargs="+", default=["0", "auto"], help="filter.workers settings to run at each size (auto: the stage's default)"
    )
    parser.add_argument("--stage-only", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--steps-rows", type=int, default=200_000, help="traces for the per-step timings (held in memory)")
    parser.add_argument("--write-corpus", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--sizes", type=int, nargs="+", help="whole-stage sizes (default: rows/4, rows/2, rows)")
    args = parser.parse_args()
    if args.write_corpus:
        make_run(Path(args.write_corpus[1]), corpus(int(args.write_corpus[0]))[0])
    elif args.stage_only:
        n, tmp, w = args.stage_only
        print(json.dumps(bench_stage(int(n), tmp, None if w == "auto" else int(w))))
    else:
        main(args)
