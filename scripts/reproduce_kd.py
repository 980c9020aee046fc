"""Logit distillation against sequence-level distillation on SVAMP, with a teacher we trained.

Teacher: SmolLM2-135M-Instruct fine-tuned on SVAMP by the toolkit (``configs/svamp_palm.yaml``,
the step-by-step recipe; ``--teacher DIR`` takes one already trained). Student: its depth-pruned
copy (20 of 30 layers, ``student.init: pruned``). Arms, one student budget each (--steps + --kd-steps
steps of --batch-size problems):

  sft              the teacher's recipe on the same data (PaLM's rationales, the gold labels)
  sft+on_policy    the sft arm's student, then on-policy KD from the teacher (TRL DistillationTrainer,
                   generalized JSD, kd.beta) for --kd-steps steps at --kd-lr
  sft+sft          the control: the sft arm's student, then --kd-steps more SFT steps of the same recipe
                   at --kd-lr (same start, steps, problems a step and schedule as sft+on_policy; only
                   the loss differs, and an SFT step costs more than a KD step)
  on_policy        on-policy KD alone, from the pruned copy
  offline_topk     the teacher writes answers for the train problems with its top-k logprobs
                   (generate.logprobs), and the student trains on them with CE + KL to the top-k

beside the teacher and the pruned student before training, all evaluated by the evaluate stage
on the 200 test problems. ``--seeds 0 1`` repeats sft, sft+on_policy and sft+sft per seed (the
teacher is trained once, with --seed). ``--betas 0 0.5 1`` also runs sft+on_policy for each beta on
``--beta-steps`` KD steps (first seed). Jobs run in this order: the first seed's sft arms, the beta
sweep, offline_topk, the other seeds, then on_policy. ``<out>/results.md`` and ``results.json``
are rewritten after every arm: accuracy with bootstrap CIs, McNemar p against the same seed's sft
and of sft+on_policy against sft+sft, a sign test over problems with the seeds pooled, the teacher
gap closed, seconds per training step. Every finished stage is reused, so a stopped run resumes.

    .venv/bin/python scripts/reproduce_kd.py [--teacher runs/svamp_palm/train/model] [--steps 300] [--kd-steps 100] [--seeds 0 1]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import date
from pathlib import Path

from llmdistill.outputs import stage_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEEP_20_OF_30 = [0, 1, 3, 4, 6, 7, 9, 10, 12, 13, 15, 16, 18, 19, 21, 22, 24, 25, 27, 28]
AFTER_SFT = ("sft", "sft+on_policy", "sft+sft")  # the arms repeated per seed


def base_overrides(args, out: Path, seed: int, eval_steps: int) -> dict:
    return {
        "output_dir": str(out),
        "data.max_test": args.max_test,
        **({"data.max_train": args.max_train} if args.max_train else {}),
        "train.max_steps": args.steps,
        "train.learning_rate": args.lr,
        "train.eval_steps": eval_steps,
        "train.seed": seed,
        "evaluate.models": "[student]",
        "evaluate.batch_size": 20,
        "evaluate.plot": False,
    }


def load(overrides: dict):
    from llmdistill.config.file import load_config

    return load_config(ROOT / "configs" / "svamp_palm.yaml", [f"{k}={v}" for k, v in overrides.items()])


def teacher_config(args):
    out = Path(args.out) / "teacher"
    return load(
        {
            **base_overrides(args, out, args.seed, args.eval_steps),
            "train.max_steps": args.teacher_steps,
            "student.model_name_or_path": args.model,
        }
    )


def arm_name(arm: str, seed: int, args, beta: float | None = None) -> str:
    """The run's key in the results and its folder name (the first seed keeps the bare arm name)."""
    name = arm if beta is None else f"{arm}@beta{beta:g}@{args.beta_steps}steps"
    return name if seed == args.seeds[0] else f"{name}@seed{seed}"


def student_config(args, arm: str, teacher: str, seed: int, beta: float | None = None):
    out = Path(args.out) / arm_name(arm, seed, args, beta)
    kd_steps = args.kd_steps if beta is None else args.beta_steps
    o = {
        **base_overrides(args, out, seed, args.student_eval_steps or args.eval_steps),
        "student.init": "pruned",
        "student.model_name_or_path": teacher,
        "student.keep_layers": "[" + ", ".join(map(str, KEEP_20_OF_30)) + "]",
    }
    if arm in ("sft+on_policy", "sft+sft"):  # from the same seed's sft student: the SFT phase is not trained twice
        o |= {
            "student.init": "pretrained",
            "student.model_name_or_path": str(Path(args.out) / arm_name("sft", seed, args) / "train" / "model"),
        }
        del o["student.keep_layers"]
    kd = {
        "kd.teacher": teacher,
        "kd.max_steps": kd_steps,
        "kd.beta": args.beta if beta is None else beta,
        "kd.learning_rate": args.kd_lr,
        "kd.per_device_train_batch_size": args.batch_size,
        "kd.max_new_tokens": 24,
        "kd.generation": "transformers",
        "train.save_steps": args.student_eval_steps or args.eval_steps,
    }  # the KD phase's checkpoints (SFT saves at its evaluations)
    if arm == "sft+on_policy":
        o |= {"kd.method": "on_policy", "kd.after_sft": False, **kd}
    elif arm == "sft+sft":
        # One validation pass, at the last step: the final model is kept, as the KD phase keeps its own.
        o |= {"train.max_steps": kd_steps, "train.learning_rate": args.kd_lr, "train.eval_steps": kd_steps}
    elif arm == "on_policy":  # the whole budget in KD steps
        o |= {"kd.method": "on_policy", "kd.after_sft": False, **kd, "kd.max_steps": args.steps + args.kd_steps}
    elif arm == "offline_topk":
        # The fine-tuned teacher answers the train problems with its own prompt (the label prompt,
        # zero-shot: a prompt file whose instruction is the label task's) and returns its top-k per
        # token; the student learns those tokens and distributions. Its answers carry no rationale, so
        # the length filter (a minimum rationale length) is off; the correct filter keeps the right ones.
        # (offline top-k trains mode cot: the recipe's step-by-step settings go back to their defaults.)
        o |= {
            "train.max_steps": args.steps + args.kd_steps,  # the whole budget in steps of CE + KL
            "teacher.model_name_or_path": teacher,
            "teacher.backend": args.teacher_backend,
            "teacher.replay": "{}",
            "data.num_shots": 0,
            "data.prompt": str(ROOT / "prompts" / "arithmetic_label.yaml"),
            "filter.order": "[truncated, parse, correct, degenerate, dedup_exact, dedup_near]",
            "generate.logprobs": args.topk,
            "generate.max_new_tokens": args.cot_tokens,
            "train.mode": "cot",
            "train.label_source": "teacher",
            "train.gold_label": "value",
            "train.alpha": 0.5,
            "train.batch_unit": "problems",
            "train.labels_for": "all_problems",
            "train.eval_max_new_tokens": args.cot_tokens,
            "evaluate.max_new_tokens": args.cot_tokens,
            "kd.method": "offline_topk",
            "kd.lam": args.lam,
        }
    return load(o)


def run_one(cfg) -> dict:
    from llmdistill.outputs import read_stats
    from llmdistill.pipeline import run

    t0 = time.time()
    run(cfg)
    report = json.loads((stage_dir(cfg, "evaluate") / "report.json").read_text())["models"]
    stats = read_stats(cfg, "train") or {}
    phases = {p: stats[p] for p in ("sft", "kd") if isinstance(stats.get(p), dict)}
    return {
        "accuracy": report["student"]["accuracy"],
        "ci": report["student"].get("ci"),
        "phases": {
            p: {k: v.get(k) for k in ("steps", "train_seconds", "train_loss", "best_eval_accuracy", "resumed_from")}
            for p, v in phases.items()
        },
        "seconds": round(time.time() - t0, 1),
        "output_dir": cfg.output_dir,
    }


def answers_of(out_dir: str, model: str = "student") -> dict[str, tuple[str | None, bool]]:
    """Per test problem: (the normalized answer, whether it is correct), greedy sample."""
    rows = [json.loads(line) for line in (Path(out_dir) / "evaluate" / "results.jsonl").read_text().splitlines()]
    return {r["id"]: (r["answer_key"], r["verdict"] == "correct") for r in rows if r["model"] == model and r["sample"] == 0}


def jobs(args) -> list[tuple[str, int, float | None]]:
    """(arm, seed, sweep beta) in the order they run: what the comparison needs most comes first."""
    first, rest = args.seeds[0], args.seeds[1:]
    main = [a for a in AFTER_SFT if a in args.arms or a == "sft"]
    others = [a for a in args.arms if a not in AFTER_SFT]
    return (
        [(a, first, None) for a in main]
        + [("sft+on_policy", first, b) for b in args.betas]
        + [(a, first, None) for a in others if a == "offline_topk"]
        + [(a, s, None) for s in rest for a in main]
        + [(a, first, None) for a in others if a != "offline_topk"]
    )


def write_results(args, runs: dict, teacher: str, t_start: float) -> str:
    """results.md and results.json for the runs finished so far."""
    from llmdistill.stages.evaluate.metrics import agreement, bootstrap_ci, gap_closed, mcnemar_exact

    answers = {k: answers_of(r["output_dir"], r.get("model", "student")) for k, r in runs.items()}
    correct = {k: {i: ok for i, (_, ok) in v.items()} for k, v in answers.items()}
    ids = sorted(correct["teacher"])
    teacher_answers = answers["teacher"]
    # Does a student answer what the teacher answers, where the teacher is right and where it is wrong?
    same = {
        k: [
            sum(v[i][0] is not None and v[i][0] == teacher_answers[i][0] for i in ids if teacher_answers[i][1] == right)
            for right in (True, False)
        ]
        for k, v in answers.items()
    }
    acc = {k: sum(v[i] for i in ids) / len(ids) for k, v in correct.items()}
    ci = {k: bootstrap_ci([v[i] for i in ids], 10000, 0.95, args.seed) for k, v in correct.items()}
    base = "pruned, untrained"
    lines = [
        f"SVAMP test ({len(ids)} problems), {date.today()}; teacher: SmolLM2-135M-Instruct fine-tuned by the toolkit ({teacher}); "
        f"student: its 20-of-30-layer pruned copy; {args.steps} SFT steps, then {args.kd_steps} KD or SFT steps at lr {args.kd_lr:g} "
        f"(on_policy and offline_topk: {args.steps + args.kd_steps} steps), batch {args.batch_size} problems; beta {args.beta:g}; "
        f"seeds {', '.join(map(str, args.seeds))}; {(time.time() - t_start) / 60:.0f} min",
        "",
        "| run | accuracy [95% CI] | gap closed | vs same seed's sft: both / only sft / only run / neither | McNemar p | "
        "same answer as the teacher: where it is right / wrong | SFT s/step | KD s/step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    pairs = []
    for k, r in runs.items():
        sft = arm_name("sft", r["seed"], args) if "seed" in r else None
        table, p = "", "-"
        if sft in correct and k != sft:
            t = agreement([correct[sft][i] for i in ids], [correct[k][i] for i in ids])
            table, p = f"{t['both']} / {t['only_a']} / {t['only_b']} / {t['neither']}", f"{mcnemar_exact(t['only_a'], t['only_b']):.3g}"
        g = gap_closed(acc[k], acc[base], acc["teacher"]) if k not in ("teacher", base) and base in acc else None
        per_step = {
            ph: f"{v['train_seconds'] / v['steps']:.2f}"
            for ph, v in r.get("phases", {}).items()  # a resumed phase timed only its last part
            if v.get("steps") and v.get("train_seconds") and not v.get("resumed_from")
        }
        lines.append(
            f"| {k} | {100 * acc[k]:.1f}% [{100 * ci[k][0]:.1f}, {100 * ci[k][1]:.1f}] | {'-' if g is None else f'{100 * g:.1f}%'} | "
            f"{table} | {p} | {'-' if k == 'teacher' else f'{same[k][0]} / {same[k][1]}'} | {per_step.get('sft', '-')} | {per_step.get('kd', '-')} |"
        )
    for a, b in (
        ("sft+sft", "sft+on_policy"),
        ("sft", "sft+on_policy"),
        ("sft", "sft+sft"),
        ("sft+sft", "offline_topk"),
        ("sft+sft", "on_policy"),
    ):
        done = [s for s in args.seeds if arm_name(a, s, args) in correct and arm_name(b, s, args) in correct]
        if not done:
            continue
        ca, cb = [correct[arm_name(a, s, args)] for s in done], [correct[arm_name(b, s, args)] for s in done]
        per_seed = [mcnemar_exact(sum(x[i] and not y[i] for i in ids), sum(y[i] and not x[i] for i in ids)) for x, y in zip(ca, cb)]
        net = [sum(c[i] for c in cb) - sum(c[i] for c in ca) for i in ids]
        a_wins, b_wins = sum(n < 0 for n in net), sum(n > 0 for n in net)
        diff = sum(acc[arm_name(b, s, args)] - acc[arm_name(a, s, args)] for s in done) / len(done)
        pairs.append(
            {
                "a": a,
                "b": b,
                "seeds": done,
                "diff": diff,
                "mcnemar_p": per_seed,
                "a_wins": a_wins,
                "b_wins": b_wins,
                "sign_p": mcnemar_exact(a_wins, b_wins),
            }
        )
    if pairs:
        lines += [
            "",
            "| A | B | seeds | B - A (mean) | McNemar p per seed | problems A wins / B wins (seeds pooled) | sign test p |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {q['a']} | {q['b']} | {', '.join(map(str, q['seeds']))} | {100 * q['diff']:+.1f} | "
            f"{', '.join(f'{x:.3g}' for x in q['mcnemar_p'])} | {q['a_wins']} / {q['b_wins']} | {q['sign_p']:.3g} |"
            for q in pairs
        ]
    text = "\n".join(lines) + "\n"
    out = Path(args.out)
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(
        json.dumps({"args": vars(args), "accuracy": acc, "ci": ci, "pairs": pairs, "same_as_teacher": same, "runs": runs}, indent=2)
    )
    return text


def main(args) -> None:
    from llmdistill.outputs import is_complete
    from llmdistill.stages.evaluate.run import evaluate

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    t_start = time.time()
    runs: dict[str, dict] = {}
    prune = {"student.init": "pruned", "student.keep_layers": "[" + ", ".join(map(str, KEEP_20_OF_30)) + "]"}
    if args.teacher:  # evaluated as it is
        teacher = args.teacher
        tcfg = load(
            {
                **base_overrides(args, Path(args.out) / "teacher_eval", args.seed, args.eval_steps),
                "student.model_name_or_path": teacher,
                "evaluate.models": "[student_init]",
            }
        )
        if not is_complete(tcfg, "evaluate"):
            evaluate(tcfg)
        runs["teacher"] = {"output_dir": tcfg.output_dir, "model": "student_init"}
    else:
        tcfg = teacher_config(args)
        runs["teacher"] = run_one(tcfg)
        teacher = str(stage_dir(tcfg, "train") / "model")
    pruned = load(
        {
            **base_overrides(args, Path(args.out) / "untrained_pruned", args.seed, args.eval_steps),
            **prune,
            "student.model_name_or_path": teacher,
            "evaluate.models": "[student_init]",
        }
    )
    if not is_complete(pruned, "evaluate"):
        evaluate(pruned)
    runs["pruned, untrained"] = {"output_dir": pruned.output_dir, "model": "student_init"}
    for arm, seed, beta in jobs(args):  # the beta sweep is reported beside the arms (test accuracy: not used to choose --beta)
        name = arm_name(arm, seed, args, beta)
        runs[name] = {**run_one(student_config(args, arm, teacher, seed, beta)), "seed": seed}
        print(f"{name}: {runs[name]['accuracy']}", file=sys.stderr, flush=True)
        write_results(args, runs, teacher, t_start)
    print(write_results(args, runs, teacher, t_start))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--model", default=str(ROOT / "models" / "SmolLM2-135M-Instruct"), help="the pretrained model the teacher is fine-tuned from"
    )
    p.add_argument(
        "--teacher", default=None, help="an already fine-tuned teacher (HF folder); default: train one with configs/svamp_palm.yaml"
    )
    p.add_argument("--teacher-steps", type=int, default=1200)
    p.add_argument("--out", default=str(ROOT / "runs" / "kd_repro"))
    p.add_argument("--steps", type=int, default=300, help="SFT steps of each student arm")
    p.add_argument("--kd-steps", type=int, default=100, help="KD steps after SFT (and the sft+sft control's extra SFT steps)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--kd-lr", type=float, default=1e-4)
    p.add_argument("--cot-tokens", type=int, default=160, help="offline_topk: the teacher's and the student's answer length")
    p.add_argument(
        "--eval-steps", type=int, default=50, help="the teacher's validation cadence (and the students', unless --student-eval-steps)"
    )
    p.add_argument(
        "--student-eval-steps",
        type=int,
        default=None,
        help="the sft arms' validation cadence; make it divide --steps so the last step is a candidate",
    )
    p.add_argument("--beta", type=float, default=0.5)
    p.add_argument(
        "--betas", type=float, nargs="*", default=[0.0, 0.5, 1.0], help="a short sweep of sft+on_policy, reported beside the arms"
    )
    p.add_argument("--beta-steps", type=int, default=30)
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--lam", type=float, default=0.5)
    p.add_argument("--teacher-backend", default="transformers", choices=["transformers", "vllm"])
    p.add_argument("--seed", type=int, default=0, help="the teacher's seed")
    p.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="the student arms' seeds (sft, sft+on_policy, sft+sft repeated per seed)"
    )
    p.add_argument("--max-test", type=int, default=200)
    p.add_argument("--max-train", type=int, default=None, help="the first N train problems only (a smoke run)")
    p.add_argument("--arms", nargs="+", default=["sft", "sft+on_policy", "sft+sft", "on_policy", "offline_topk"])
    main(p.parse_args())
