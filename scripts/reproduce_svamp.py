"""Reproduce the central comparison of *Distilling Step-by-Step* on SVAMP with this toolkit.

Teacher: the PaLM-540B chain-of-thought completions released with the paper, replayed
(``data/svamp``). Student: SmolLM2-135M-Instruct. Under one budget (steps, batch, learning rate,
zero-shot student prompts) it trains and evaluates, on the 200 test problems with the toolkit's
evaluate stage, the arms named by ``--arms``:

  label_gold        standard fine-tuning on the gold labels, SVAMP's equations as the paper does
                    ('The answer is (84 / 2).': the arithmetic is left to the checker)
  step_by_step_gold label + rationale as two tasks, alpha 0.5: the gold label of every train
                    problem, PaLM's rationale where its trace was kept (the paper's data)
  label_gold_value  label_gold on the values ('The answer is 42.': the student computes)
  label_teacher     fine-tuning on the teacher's labels (its correct traces; PaLM writes equations)
  step_by_step      two tasks on the kept traces only, teacher labels
  answer_first(_gold) one sequence per problem: answer, blank line, rationale (train.layout)
  cot               rationale + answer as one completion

beside the replayed teacher and the untrained student. The defaults are the recipe that won
(docs/results.md): 1200 steps of 8 problems (each giving both tasks), lr 3e-4, 10% of the train
problems held out and the checkpoint chosen on their accuracy every 100 steps, lengths grouped,
three seeds, label_gold against step_by_step_gold. Each seed writes ``<out>/seed<N>/results.md``
(accuracies with bootstrap CIs, McNemar p-values, curves.png); then ``<out>/seeds.md`` holds the
summary across seeds (mean, spread, a paired sign test over problems) and ``curves_seeds.png``.
Every finished stage is reused, so a stopped run resumes where it was.

    .venv/bin/python scripts/reproduce_svamp.py                         # the recipe, 3 seeds
    .venv/bin/python scripts/reproduce_svamp.py --jobs 2                # arms in parallel (a GPU)
    .venv/bin/python scripts/reproduce_svamp.py --lr 1e-4 --alpha 0.7 --arms label_gold step_by_step_gold answer_first_gold --seeds 0

Time: one seed is ~7 min on an H100 with ``--jobs 2``, ~3.5 h on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from datetime import date
from itertools import combinations
from pathlib import Path

from llmdistill.outputs import stage_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ARMS = {
    "label_gold": {"train.mode": "label", "train.label_source": "gold", "train.gold_label": "as_written"},
    "label_gold_value": {"train.mode": "label", "train.label_source": "gold"},
    "label_teacher": {"train.mode": "label", "train.label_source": "teacher"},
    "step_by_step": {"train.mode": "step_by_step", "train.label_source": "teacher", "train.alpha": 0.5},
    "cot": {"train.mode": "cot"},
    # one sequence per problem: answer, blank line, rationale (train.layout answer_first)
    "answer_first": {"train.mode": "step_by_step", "train.layout": "answer_first", "train.label_source": "teacher", "train.alpha": 0.5},
    # the paper's data: the gold label of every train problem, the teacher's rationale where one was kept
    "step_by_step_gold": {
        "train.mode": "step_by_step",
        "train.label_source": "gold",
        "train.gold_label": "as_written",
        "train.labels_for": "all_problems",
        "train.alpha": 0.5,
    },
    "answer_first_gold": {
        "train.mode": "step_by_step",
        "train.layout": "answer_first",
        "train.label_source": "gold",
        "train.gold_label": "as_written",
        "train.labels_for": "all_problems",
        "train.alpha": 0.5,
    },
}
# Issue 13's levers, as flags: --batch-unit problems (the paper's batching: each step's B problems
# give a label and a rationale example each), --validation-fraction/--eval-steps/--select-on accuracy
# (the best checkpoint on held-out train problems, and accuracy-vs-steps curves), --group-by-length.
SWEEP_ARMS = ("label_gold", "step_by_step", "step_by_step_gold")
# Hsieh et al. (2023), SVAMP, 220M T5 student (Table/Figure values quoted in the issue).
PAPER = {"teacher": 77.0, "label_gold": 62.6, "step_by_step": 65.5}


def config(args, name: str, settings: dict, fraction: float = 1.0, models: str = "[student]"):
    from llmdistill.config.file import load_config

    label_prompt = settings.get("train.mode") != "cot"
    overrides = {
        "output_dir": str(Path(args.out) / (name if fraction == 1 else f"{name}@{fraction:g}")),
        "data.max_test": args.max_test,
        "student.init": "pretrained",
        "student.model_name_or_path": args.model,
        "train.num_shots": 0,
        "train.max_steps": args.steps,
        "train.per_device_train_batch_size": args.batch_size,
        "train.learning_rate": args.lr,
        "train.seed": args.seed,
        "train.max_length": 512,
        "train.logging_steps": 10,
        "train.warmup_steps": 0.05,
        "train.data_fraction": fraction,
        "train.group_by_length": args.group_by_length,
        **(
            {"train.batch_unit": args.batch_unit} if settings.get("train.mode") == "step_by_step" and "train.layout" not in settings else {}
        ),
        **(
            {"train.validation_fraction": args.validation_fraction, "train.eval_steps": args.eval_steps, "train.select_on": args.select_on}
            if args.validation_fraction
            else {}
        ),
        **({"train.eval_max_new_tokens": 24 if label_prompt else args.cot_tokens} if args.select_on == "accuracy" else {}),
        "evaluate.models": models,
        "evaluate.max_new_tokens": 24 if label_prompt else args.cot_tokens,
        "evaluate.batch_size": 20,
        "evaluate.plot": False,
        **settings,
        **({"train.alpha": args.alpha} if args.alpha is not None and settings.get("train.mode") == "step_by_step" else {}),
    }
    return load_config(ROOT / "configs" / "svamp_palm.yaml", [f"{k}={v}" for k, v in overrides.items()])


def run_arm(cfg, train: bool = True) -> dict:
    """The whole pipeline for a trained arm; only the evaluate stage for the reference models."""
    from llmdistill.outputs import is_complete, read_stats
    from llmdistill.pipeline import run
    from llmdistill.stages.evaluate.run import evaluate

    t0 = time.time()
    if train:
        run(cfg)  # skips the stages already complete for this config: a stopped sweep resumes
    elif not is_complete(cfg, "evaluate"):
        evaluate(cfg)
    report = json.loads((stage_dir(cfg, "evaluate") / "report.json").read_text())
    train = read_stats(cfg, "train") or {}
    history = (train.get("sft") or {}).get("log_history") or []
    curve = [(h["step"], h["eval_accuracy"]) for h in history if "eval_accuracy" in h]
    examples = stage_dir(cfg, "train") / "examples.jsonl"
    held_out = (
        len({json.loads(line)["id"] for line in examples.read_text().splitlines() if '"validation"' in line}) if examples.is_file() else 0
    )
    return {
        "report": report,
        "curve": curve,
        "held_out": held_out,
        "seen": train.get("seen"),
        "best_eval_accuracy": train.get("best_eval_accuracy"),
        "best_checkpoint": (train.get("sft") or {}).get("best_checkpoint"),
        "train": {
            k: (train.get("sft") or {}).get(k, train.get(k)) for k in ("steps", "examples", "train_loss", "train_seconds", "tokens_seen")
        },
        "seconds": round(time.time() - t0, 1),
        "output_dir": cfg.output_dir,
    }


def greedy_correct(out_dir: str, model: str) -> dict[str, bool]:
    rows = [json.loads(line) for line in (Path(out_dir) / "evaluate" / "results.jsonl").read_text().splitlines()]
    return {r["id"]: r["verdict"] == "correct" for r in rows if r["model"] == model and r["sample"] == 0}


def main(args) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.summarize:
        print(summarize_seeds([Path(d) for d in args.summarize], Path(args.out)))
        return
    if len(args.seeds) == 1:
        args.seed = args.seeds[0]
        return compare(args)
    dirs = []
    for seed in args.seeds:
        one = argparse.Namespace(**{**vars(args), "seed": seed, "out": str(Path(args.out) / f"seed{seed}")})
        compare(one)
        dirs.append(Path(one.out))
    print(summarize_seeds(dirs, Path(args.out)))


def compare(args) -> None:
    """One seed: every arm trained and evaluated, the comparison table and the curves."""
    from llmdistill.stages.evaluate.metrics import agreement, bootstrap_ci, gap_closed, mcnemar_exact

    if not Path(args.model, "config.json").is_file():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "fetch_smollm2.py"), "--out", args.model], check=True)
    t_start = time.time()
    runs: dict[str, dict] = {}
    # Reference models: the replayed teacher and the untrained student on each prompt.
    runs["teacher+untrained(label)"] = run_arm(
        config(args, "untrained_label", ARMS["label_gold_value"], models="[teacher, student_init]"), train=False
    )
    if "cot" in args.arms:
        runs["untrained(cot)"] = run_arm(config(args, "untrained_cot", ARMS["cot"], models="[student_init]"), train=False)
    if args.jobs > 1:
        run_in_parallel(args)
    for name, settings in {k: ARMS[k] for k in args.arms}.items():
        for fraction in sorted(set(args.fractions) if name in SWEEP_ARMS else {1.0}, reverse=True):
            key = name if fraction == 1 else f"{name}@{fraction:g}"
            runs[key] = run_arm(config(args, name, settings, fraction))
            print(f"{key}: {runs[key]['report']['models']['student']['accuracy']}", file=sys.stderr, flush=True)

    if args.no_report:
        return
    correct = {
        "teacher": greedy_correct(runs["teacher+untrained(label)"]["output_dir"], "teacher"),
        "untrained (label prompt)": greedy_correct(runs["teacher+untrained(label)"]["output_dir"], "student_init"),
    }
    if "untrained(cot)" in runs:
        correct["untrained (cot prompt)"] = greedy_correct(runs["untrained(cot)"]["output_dir"], "student_init")
    for key, r in runs.items():
        if "untrained" not in key:
            correct[key] = greedy_correct(r["output_dir"], "student")
    ids = sorted(correct["teacher"])
    acc = {k: sum(v[i] for i in ids) / len(ids) for k, v in correct.items()}
    ci = {k: bootstrap_ci([v[i] for i in ids], 10000, 0.95, args.seed) for k, v in correct.items()}
    base_for = lambda k: "untrained (cot prompt)" if k.startswith("cot") else "untrained (label prompt)"
    gap = {k: gap_closed(acc[k], acc[base_for(k)], acc["teacher"]) for k in correct if k not in ("teacher",) and "untrained" not in k}
    main_arms = [k for k in ARMS if k in correct]
    wanted = [("teacher", k) for k in correct if "untrained" not in k and k != "teacher"] + list(combinations(main_arms, 2))
    swept = [k for k in SWEEP_ARMS if k in args.arms]
    wanted += [(f"{a}@{f:g}", f"{b}@{f:g}") for f in args.fractions if f != 1 for a, b in combinations(swept, 2)]
    pairs = []
    for a, b in wanted:
        t = agreement([correct[a][i] for i in ids], [correct[b][i] for i in ids])
        pairs.append({"a": a, "b": b, **t, "mcnemar_p": mcnemar_exact(t["only_a"], t["only_b"])})

    lines = [
        f"SVAMP test ({len(ids)} problems), student {Path(args.model).name}, {date.today()}; budget per arm: {args.steps} steps x batch "
        f"{args.batch_size} ({args.batch_unit} for step_by_step), lr {args.lr}, alpha {0.5 if args.alpha is None else args.alpha}, seed {args.seed}, zero-shot student prompts"
        + (
            f", best checkpoint by validation {args.select_on} ({args.validation_fraction:g} of train problems, every {args.eval_steps} steps)"
            if args.validation_fraction
            else ""
        )
        + f"; total {(time.time() - t_start) / 60:.0f} min",
        "",
        "| model | training examples | label examples seen | label / rationale tokens seen | train s | best val acc (step) | accuracy [95% CI] | gap closed | paper (220M T5) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for k in correct:
        run = runs.get(k)
        seen = (run or {}).get("seen") or {}
        ex = run["train"]["examples"] if run else "-"
        label_seen = seen.get("label_examples", "-")
        tokens = f"{seen.get('label_tokens', 0)} / {seen.get('rationale_tokens', 0)}" if seen else "-"
        secs = run["train"].get("train_seconds") if run else "-"
        best = (run or {}).get("best_eval_accuracy")
        best_step = (run or {}).get("best_checkpoint") or ""
        best_txt = f"{100 * best:.1f}% ({best_step.rsplit('-', 1)[-1]})" if best is not None else "-"
        g = f"{100 * gap[k]:.1f}%" if gap.get(k) is not None else "-"
        paper = PAPER.get(k)
        lines.append(
            f"| {k} | {ex} | {label_seen} | {tokens} | {secs} | {best_txt} | {100 * acc[k]:.1f}% [{100 * ci[k][0]:.1f}, {100 * ci[k][1]:.1f}] "
            f"| {g} | {'-' if paper is None else f'{paper}%'} |"
        )
    lines += ["", "| A | B | both right | only A | only B | neither | McNemar exact p |", "|---|---|---|---|---|---|---|"]
    lines += [
        f"| {p['a']} | {p['b']} | {p['both']} | {p['only_a']} | {p['only_b']} | {p['neither']} | {p['mcnemar_p']:.3g} |" for p in pairs
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    plot_curves(
        {f"{k} ({r['held_out']} held-out problems)": r["curve"] for k, r in runs.items() if r.get("curve")}, out / "curves.png", args
    )
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(
        json.dumps(
            {
                "args": vars(args),
                "accuracy": acc,
                "ci": ci,
                "gap_closed": gap,
                "pairs": pairs,
                "runs": {k: {**r, "report": r["report"]["models"]} for k, r in runs.items()},
            },
            indent=2,
        )
    )


def summarize_seeds(dirs: list[Path], out: Path) -> str:
    """Across seeds: each arm's accuracy per seed, mean and spread; per pair of arms the McNemar
    p of every seed and a paired sign test over problems on the seeds pooled (a problem counts for
    the arm that got it right in more seeds); all validation curves in one PNG."""
    from statistics import mean, stdev

    from llmdistill.stages.evaluate.metrics import mcnemar_exact

    results = [json.loads((d / "results.json").read_text()) for d in dirs]
    arms = [k for k in results[0]["runs"] if k in ARMS and all(k in r["runs"] for r in results)]
    correct = {k: [greedy_correct(str(d / k), "student") for d in dirs] for k in arms}
    ids = sorted(correct[arms[0]][0])
    seeds = [r["args"]["seed"] for r in results]
    a0 = results[0]["args"]
    lines = [
        f"SVAMP test ({len(ids)} problems), {len(dirs)} seeds ({', '.join(map(str, seeds))}); per arm {a0['steps']} steps x batch "
        f"{a0['batch_size']} ({a0['batch_unit']} for step_by_step), lr {a0['lr']}, alpha {a0.get('alpha') or 0.5}, best checkpoint "
        f"by validation {a0['select_on']}; teacher {100 * results[0]['accuracy']['teacher']:.1f}%",
        "",
        "| arm | " + " | ".join(f"seed {s}" for s in seeds) + " | mean (sd) | best val step per seed |",
        "|---|" + "---|" * len(seeds) + "---|---|",
    ]
    acc = {k: [sum(c[i] for i in ids) / len(ids) for c in correct[k]] for k in arms}
    for k in arms:
        steps = [(r["runs"][k].get("best_checkpoint") or "-").rsplit("-", 1)[-1] for r in results]
        spread = f" ({100 * stdev(acc[k]):.1f})" if len(acc[k]) > 1 else ""
        lines.append(
            f"| {k} | " + " | ".join(f"{100 * a:.1f}%" for a in acc[k]) + f" | {100 * mean(acc[k]):.1f}%{spread} | {', '.join(steps)} |"
        )
    lines += [
        "",
        "| A | B | B - A (mean) | McNemar p per seed | problems A wins / B wins (seeds pooled) | sign test p |",
        "|---|---|---|---|---|---|",
    ]
    summary = {"seeds": seeds, "accuracy": acc, "pairs": []}
    for a, b in combinations(arms, 2):
        per_seed = [
            mcnemar_exact(sum(ca[i] and not cb[i] for i in ids), sum(cb[i] and not ca[i] for i in ids))
            for ca, cb in zip(correct[a], correct[b])
        ]
        net = [sum(c[i] for c in correct[b]) - sum(c[i] for c in correct[a]) for i in ids]
        a_wins, b_wins = sum(n < 0 for n in net), sum(n > 0 for n in net)
        p = mcnemar_exact(a_wins, b_wins)
        diff = mean(acc[b]) - mean(acc[a])
        summary["pairs"].append({"a": a, "b": b, "diff": diff, "mcnemar_p": per_seed, "a_wins": a_wins, "b_wins": b_wins, "sign_p": p})
        lines.append(f"| {a} | {b} | {100 * diff:+.1f} | {', '.join(f'{x:.3g}' for x in per_seed)} | {a_wins} / {b_wins} | {p:.3g} |")
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "seeds.md").write_text(text)
    (out / "seeds.json").write_text(json.dumps(summary, indent=2))
    plot_seed_curves({k: [r["runs"][k]["curve"] for r in results] for k in arms}, out / "curves_seeds.png", a0, seeds)
    return text


def plot_seed_curves(curves: dict[str, list[list]], path: Path, a0: dict, seeds: list[int]) -> None:
    """Validation accuracy against steps: one colour per arm, a thin line per seed, the mean bold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for (name, runs), color in zip(curves.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        for points in runs:
            ax.plot([s for s, _ in points], [100 * a for _, a in points], color=color, alpha=0.3, linewidth=1)
        steps = sorted(set.intersection(*[{s for s, _ in pts} for pts in runs]))
        means = [100 * sum(dict(pts)[s] for pts in runs) / len(runs) for s in steps]
        ax.plot(steps, means, color=color, linewidth=2.5, marker="o", label=f"{name} (mean of {len(runs)} seeds)")
    ax.set_xlabel(f"training step (batch {a0['batch_size']} problems)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(
        f"SVAMP, SmolLM2-135M, lr {a0['lr']}: validation accuracy, seeds {', '.join(map(str, seeds))}\n"
        f"(each seed holds out its own {a0['validation_fraction']:g} of the train problems; thin: one seed)",
        fontsize=10,
    )
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def child_argv(args) -> list[str]:
    """This run's settings as flags, for a one-arm process of the same seed."""
    base = []
    for key, value in vars(args).items():
        flag = "--" + key.replace("_", "-")
        if key == "group_by_length":
            base.append(flag if value else "--no-group-by-length")
            continue
        if key in ("arms", "jobs", "no_report", "seeds", "seed", "summarize") or value is None or value is False:
            continue
        base += [flag] if value is True else [flag, *map(str, value)] if isinstance(value, list) else [flag, str(value)]
    return [*base, "--seeds", str(args.seed)]


def run_in_parallel(args) -> None:
    """``--jobs N``: each trained arm in its own process, N at a time (a GPU with room for several
    students); the report below then reads the finished arms. A stopped sweep resumes the same way."""
    from concurrent.futures import ThreadPoolExecutor

    base = child_argv(args)
    jobs = [[name] for name in args.arms]

    def one(arms: list[str]) -> int:
        log_path = Path(args.out) / f"{arms[0]}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a") as log_file:
            cmd = [sys.executable, str(Path(__file__).resolve()), *base, "--arms", *arms, "--jobs", "1", "--no-report"]
            return subprocess.run(cmd, stdout=log_file, stderr=subprocess.STDOUT).returncode

    with ThreadPoolExecutor(args.jobs) as pool:
        codes = list(pool.map(one, jobs))
    failed = [a[0] for a, c in zip(jobs, codes) if c]
    if failed:
        raise SystemExit(f"arms failed: {failed}; see {args.out}/<arm>.log")


def plot_curves(curves: dict[str, list], path: Path, args) -> None:
    """Validation accuracy against training steps, one line per arm, in one PNG."""
    if not curves:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for (name, points), marker in zip(curves.items(), "osD^v<>"):
        ax.plot([s for s, _ in points], [100 * a for _, a in points], marker=marker, label=name)
    ax.set_xlabel(f"training step (batch {args.batch_size} problems)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(
        f"SVAMP, SmolLM2-135M: validation accuracy on each arm's own held-out train problems\n"
        f"({args.validation_fraction:g} of them by id; arms trained on kept traces only hold out problems the teacher solved)",
        fontsize=10,
    )
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(ROOT / "models" / "SmolLM2-135M-Instruct"))
    p.add_argument("--out", default=str(ROOT / "runs" / "svamp_repro"))
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="one comparison per seed under <out>/seed<N>, then the summary across them"
    )
    p.add_argument("--max-test", type=int, default=200)
    p.add_argument("--cot-tokens", type=int, default=160, help="max_new_tokens for CoT answers")
    p.add_argument("--fractions", type=float, nargs="+", default=[1.0], help="data-efficiency sweep for label_gold and step_by_step")
    p.add_argument("--arms", nargs="+", default=["label_gold", "step_by_step_gold"], choices=list(ARMS))
    p.add_argument(
        "--batch-unit", choices=["examples", "problems"], default="problems", help="step_by_step batching (problems: the paper's)"
    )
    p.add_argument(
        "--validation-fraction", type=float, default=0.1, help="train problems held out for checkpoint selection and curves (0: none)"
    )
    p.add_argument("--eval-steps", type=int, default=100)
    p.add_argument("--select-on", choices=["loss", "accuracy"], default="accuracy")
    p.add_argument("--group-by-length", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--alpha", type=float, default=None, help="weight of the label task for the step_by_step arms (default 0.5)")
    p.add_argument("--jobs", type=int, default=1, help="trained arms run in this many processes at once (a GPU)")
    p.add_argument("--no-report", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=None, help=argparse.SUPPRESS)  # set per seed by --seeds
    p.add_argument("--summarize", nargs="+", default=None, metavar="DIR", help="only the summary across these finished one-seed runs")
    main(p.parse_args())
