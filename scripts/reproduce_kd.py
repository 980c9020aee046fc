"""Logit distillation against sequence-level distillation on SVAMP, with a teacher we trained.

Teacher: SmolLM2-135M-Instruct fine-tuned on SVAMP by the toolkit (``configs/svamp_palm.yaml``,
the step-by-step recipe; ``--teacher DIR`` takes one already trained). Student: its depth-pruned
copy (20 of 30 layers, ``student.init: pruned``). Arms, one student budget each:

  sft              the teacher's recipe on the same data (PaLM's rationales, the gold labels)
  sft+on_policy    the sft arm's student, then on-policy KD from the teacher (TRL DistillationTrainer,
                   generalized JSD, kd.beta)
  on_policy        on-policy KD alone, from the pruned copy
  offline_topk     the teacher writes answers for the train problems with its top-k logprobs
                   (generate.logprobs), and the student trains on them with CE + KL to the top-k

beside the teacher and the pruned student before training, all evaluated by the evaluate stage
on the 200 test problems. ``--betas 0 0.5 1`` also runs sft+on_policy for each beta on
``--beta-steps`` KD steps, reported beside the arms (``--beta`` is the main arms' value).
Writes ``<out>/results.md`` and ``results.json``: accuracy with bootstrap CIs, McNemar p against
``sft``, the teacher gap closed, seconds per training step. Every finished stage is reused, so
a stopped run resumes.

    .venv/bin/python scripts/reproduce_kd.py [--teacher runs/svamp_palm/train/model] [--steps 300] [--kd-steps 100]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEEP_20_OF_30 = [0, 1, 3, 4, 6, 7, 9, 10, 12, 13, 15, 16, 18, 19, 21, 22, 24, 25, 27, 28]


def base_overrides(args, out: Path) -> dict:
    return {"output_dir": str(out), "data.max_test": args.max_test, **({"data.max_train": args.max_train} if args.max_train else {}),
            "train.max_steps": args.steps, "train.learning_rate": args.lr,
            "train.eval_steps": args.eval_steps, "train.save_steps": args.eval_steps, "train.seed": args.seed,
            "evaluate.models": "[student]", "evaluate.batch_size": 20, "evaluate.plot": False}


def load(overrides: dict):
    from llmdistill.config.file import load_config

    return load_config(ROOT / "configs" / "svamp_palm.yaml", [f"{k}={v}" for k, v in overrides.items()])


def teacher_config(args):
    out = Path(args.out) / "teacher"
    return load({**base_overrides(args, out), "train.max_steps": args.teacher_steps, "student.model_name_or_path": args.model})


def student_config(args, arm: str, teacher: str, beta: float | None = None, kd_steps: int | None = None):
    name = arm if beta is None else f"{arm}@beta{beta:g}"
    out = Path(args.out) / (name if kd_steps in (None, args.kd_steps) else f"{name}@{kd_steps}steps")
    o = {**base_overrides(args, out), "student.init": "pruned", "student.model_name_or_path": teacher,
         "student.keep_layers": "[" + ", ".join(map(str, KEEP_20_OF_30)) + "]"}
    kd = {"kd.teacher": teacher, "kd.max_steps": kd_steps or args.kd_steps, "kd.beta": args.beta if beta is None else beta,
          "kd.learning_rate": args.kd_lr, "kd.per_device_train_batch_size": args.batch_size, "kd.max_new_tokens": 24, "kd.generation": "transformers"}
    if arm == "sft+on_policy":  # KD from the sft arm's trained student: SFT then KD, the SFT phase not trained twice
        o |= {"student.init": "pretrained", "student.model_name_or_path": str(Path(args.out) / "sft" / "train" / "model"),
              "kd.method": "on_policy", "kd.after_sft": False, **kd}
        del o["student.keep_layers"]
    elif arm == "on_policy":
        o |= {"kd.method": "on_policy", "kd.after_sft": False, **kd}
    elif arm == "offline_topk":
        # The fine-tuned teacher answers the train problems with its own prompt (the label prompt,
        # zero-shot: a prompt file whose instruction is the label task's) and returns its top-k per
        # token; the student learns those tokens and distributions. Its answers carry no rationale, so
        # the length filter (a minimum rationale length) is off; the correct filter keeps the right ones.
        # (offline top-k trains mode cot: the recipe's step-by-step settings go back to their defaults.)
        o |= {"teacher.model_name_or_path": teacher, "teacher.backend": args.teacher_backend, "teacher.replay": "{}", "data.num_shots": 0,
              "data.prompt": str(label_prompt(Path(args.out))), "filter.length.enabled": "false",
              "generate.logprobs": args.topk, "generate.max_new_tokens": args.cot_tokens, "train.mode": "cot", "train.label_source": "teacher",
              "train.gold_label": "value", "train.alpha": 0.5, "train.batch_unit": "problems", "train.labels_for": "all_problems",
              "train.eval_max_new_tokens": args.cot_tokens, "evaluate.max_new_tokens": args.cot_tokens, "kd.method": "offline_topk", "kd.lam": args.lam}
    return load(o)


def label_prompt(out: Path) -> Path:
    """The SVAMP prompt file with the label task's instruction as its own: the generate stage then
    asks the teacher exactly what it was trained to answer, and the student is asked the same."""
    import yaml

    spec = yaml.safe_load((ROOT / "prompts" / "arithmetic_cot.yaml").read_text())
    spec["name"], spec["instruction"] = "arithmetic_label", spec.get("label_instruction", "[label]")
    path = out / "prompt_label.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_one(cfg) -> dict:
    from llmdistill.pipeline import run
    from llmdistill.stage import read_stats

    t0 = time.time()
    run(cfg)
    report = json.loads((cfg.stage_dir("evaluate") / "report.json").read_text())["models"]
    stats = read_stats(cfg, "train") or {}
    phases = {p: stats[p] for p in ("sft", "kd") if isinstance(stats.get(p), dict)}
    return {"accuracy": report["student"]["accuracy"], "ci": report["student"].get("ci"),
            "phases": {p: {k: v.get(k) for k in ("steps", "train_seconds", "train_loss", "best_eval_accuracy")} for p, v in phases.items()},
            "seconds": round(time.time() - t0, 1), "output_dir": cfg.output_dir}


def correct_of(out_dir: str, model: str = "student") -> dict[str, bool]:
    rows = [json.loads(line) for line in (Path(out_dir) / "evaluate" / "results.jsonl").read_text().splitlines()]
    return {r["id"]: r["verdict"] == "correct" for r in rows if r["model"] == model and r["sample"] == 0}


def main(args) -> None:
    from llmdistill.eval_metrics import bootstrap_ci, gap_closed, mcnemar_exact

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    t_start = time.time()
    runs: dict[str, dict] = {}
    from llmdistill.evaluate import evaluate
    from llmdistill.stage import is_complete

    prune = {"student.init": "pruned", "student.keep_layers": "[" + ", ".join(map(str, KEEP_20_OF_30)) + "]"}
    if args.teacher:  # evaluated as it is
        teacher = args.teacher
        tcfg = load({**base_overrides(args, Path(args.out) / "teacher_eval"), "student.model_name_or_path": teacher, "evaluate.models": "[student_init]"})
        if not is_complete(tcfg, "evaluate"):
            evaluate(tcfg)
        runs["teacher"] = {"output_dir": tcfg.output_dir, "model": "student_init"}
    else:
        tcfg = teacher_config(args)
        runs["teacher"] = run_one(tcfg)
        teacher = str(tcfg.stage_dir("train") / "model")
    pruned = load({**base_overrides(args, Path(args.out) / "untrained_pruned"), **prune, "student.model_name_or_path": teacher,
                   "evaluate.models": "[student_init]"})
    if not is_complete(pruned, "evaluate"):
        evaluate(pruned)
    runs["pruned, untrained"] = {"output_dir": pruned.output_dir, "model": "student_init"}

    beta = args.beta
    runs["sft"] = run_one(student_config(args, "sft", teacher))  # every KD-after-SFT arm starts from it
    for b in args.betas:  # a short sweep, reported beside the arms (test accuracy: not used to choose --beta)
        runs[f"sft+on_policy, beta {b:g}, {args.beta_steps} KD steps"] = run_one(student_config(args, "sft+on_policy", teacher, beta=b, kd_steps=args.beta_steps))
    for arm in [a for a in args.arms if a != "sft"]:
        runs[arm] = run_one(student_config(args, arm, teacher))
        print(f"{arm}: {runs[arm]['accuracy']}", file=sys.stderr, flush=True)

    correct = {k: correct_of(r["output_dir"], r.get("model", "student")) for k, r in runs.items()}
    ids = sorted(correct["teacher"])
    acc = {k: sum(v[i] for i in ids) / len(ids) for k, v in correct.items()}
    ci = {k: bootstrap_ci([v[i] for i in ids], 10000, 0.95, args.seed) for k, v in correct.items()}
    lines = [f"SVAMP test ({len(ids)} problems), {date.today()}; teacher: SmolLM2-135M-Instruct fine-tuned by the toolkit ({teacher}); "
             f"student: its 20-of-30-layer pruned copy; student budget {args.steps} SFT steps, {args.kd_steps} KD steps of batch {args.batch_size}, "
             f"beta {beta:g}, seed {args.seed}; total {(time.time() - t_start) / 60:.0f} min", "",
             "| model | accuracy [95% CI] | gap closed | McNemar p vs sft | SFT s/step | KD s/step |", "|---|---|---|---|---|---|"]
    base = "pruned, untrained"
    for k in correct:
        r = runs[k]
        p = "-"
        if "sft" in correct and k not in ("sft", "teacher", base):
            only_a = sum(correct["sft"][i] and not correct[k][i] for i in ids)
            only_b = sum(correct[k][i] and not correct["sft"][i] for i in ids)
            p = f"{mcnemar_exact(only_a, only_b):.3g}"
        g = gap_closed(acc[k], acc[base], acc["teacher"]) if k not in ("teacher", base) else None
        per_step = {ph: v["train_seconds"] / v["steps"] for ph, v in r.get("phases", {}).items() if v.get("steps") and v.get("train_seconds")}
        lines.append(f"| {k} | {100 * acc[k]:.1f}% [{100 * ci[k][0]:.1f}, {100 * ci[k][1]:.1f}] | {'-' if g is None else f'{100 * g:.1f}%'} | {p} | "
                     f"{per_step.get('sft', 0):.2f} | {per_step.get('kd', 0):.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "accuracy": acc, "ci": ci, "runs": runs}, indent=2))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(ROOT / "models" / "SmolLM2-135M-Instruct"), help="the pretrained model the teacher is fine-tuned from")
    p.add_argument("--teacher", default=None, help="an already fine-tuned teacher (HF folder); default: train one with configs/svamp_palm.yaml")
    p.add_argument("--teacher-steps", type=int, default=1200)
    p.add_argument("--out", default=str(ROOT / "runs" / "kd_repro"))
    p.add_argument("--steps", type=int, default=300, help="SFT steps of each student arm")
    p.add_argument("--kd-steps", type=int, default=100, help="on-policy KD steps")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--kd-lr", type=float, default=1e-4)
    p.add_argument("--cot-tokens", type=int, default=160, help="offline_topk: the teacher's and the student's answer length (a CoT student)")
    p.add_argument("--eval-steps", type=int, default=50)
    p.add_argument("--beta", type=float, default=0.5)
    p.add_argument("--betas", type=float, nargs="*", default=[0.0, 0.5, 1.0], help="a short sweep of sft+on_policy, reported beside the arms")
    p.add_argument("--beta-steps", type=int, default=30)
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--lam", type=float, default=0.5)
    p.add_argument("--teacher-backend", default="transformers", choices=["transformers", "vllm"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-test", type=int, default=200)
    p.add_argument("--max-train", type=int, default=None, help="the first N train problems only (a smoke run)")
    p.add_argument("--arms", nargs="+", default=["sft", "sft+on_policy", "on_policy", "offline_topk"])
    main(p.parse_args())
