"""Benchmark student training: the step-by-step and CoT objectives against plain TRL ``SFTTrainer``
on the same examples and model, and packing against padding.

Data: SVAMP with the PaLM-540B completions (``data/svamp``) replayed through generate
and filter, so the rationales are real teacher text. Each arm runs in its own process (peak RSS
or CUDA memory per arm) for ``--steps`` steps after ``--warmup`` untimed steps:

- ``sft-cot``: plain ``SFTTrainer`` on the CoT examples (the baseline);
- ``cot``: llmdistill's cot trainer on the same examples (plain ``SFTTrainer`` plus our config);
- ``sft-sbs``: plain ``SFTTrainer`` on the step-by-step examples (label + rationale rows, token-mean loss);
- ``step_by_step``: ``StepByStepTrainer`` on those rows (per-task weighted loss, paired batches);
- ``cot-packed``: the CoT examples packed (BFD, padding-free).

Tokens/s counts real (non-pad) tokens; padding waste is the share of pad positions in the
batches. On a CUDA machine ``--qwen`` adds a randomly initialised Qwen2.5-0.5B-shaped model in
bf16: tokens/s and MFU (6 * params * tokens/s over the GPU's dense bf16 peak).

    python scripts/bench_train.py [--model models/SmolLM2-135M-Instruct] [--steps 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from llmdistill.outputs import stage_dir

ROOT = Path(__file__).resolve().parents[1]
SVAMP = ROOT / "data" / "svamp"
ARMS = ["sft-cot", "cot", "sft-sbs", "step_by_step", "cot-packed"]
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}


def config(out: str, model: str, mode: str, packing: bool, args):
    from llmdistill.config import Config

    return Config.model_validate(
        {
            "output_dir": out,
            "data": {
                "path": str(SVAMP),
                "question_field": "input",
                "answer_field": "label",
                "prompt": str(ROOT / "prompts" / "arithmetic_cot.yaml"),
                "num_shots": 2,
            },
            "teacher": {
                "model_name_or_path": "PaLM-540B",
                "backend": "replay",
                "replay": {
                    "train": [str(SVAMP / "palm" / "train_CoT_0.json"), str(SVAMP / "palm" / "train_CoT_1.json")],
                    "test": [str(SVAMP / "palm" / "test_CoT_0.json")],
                },
            },
            "filter": {"order": ["truncated", "parse", "correct", "length", "degenerate", "dedup_exact", "dedup_near"]},
            "student": {"init": "pretrained", "model_name_or_path": model},
            "train": {
                "mode": mode,
                "num_shots": 0,
                "packing": packing,
                "max_length": 512,
                "per_device_train_batch_size": args.batch_size,
                "max_steps": args.warmup + args.steps,
                "logging_steps": 1000,
                "learning_rate": 1e-5,
                "preflight_probe": False,
                **({"batch_unit": "examples"} if mode == "step_by_step" else {}),
            },
        }
    )


def peak_memory_mib() -> int:
    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024)
    return 0


class Timer:
    """A callback timing the steps after the warm-up and counting real and padded tokens."""

    def __new__(cls, warmup: int):
        from transformers import TrainerCallback

        class _T(TrainerCallback):
            def __init__(self):
                self.t0, self.t1 = None, None

            def on_step_begin(self, args, state, control, **kw):
                if state.global_step == warmup and self.t0 is None:
                    _sync()
                    self.t0 = time.perf_counter()

            def on_train_end(self, args, state, control, **kw):
                _sync()
                self.t1 = time.perf_counter()

        return _T()


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run_arm(arm: str, args) -> dict:
    sys.path.insert(0, str(ROOT))
    import torch

    from llmdistill.backends.transformers import load_tokenizer
    from llmdistill.jsonl import read_rows
    from llmdistill.records import FilteredTrace
    from llmdistill.stages.filter.run import filter_traces
    from llmdistill.stages.generate.run import generate
    from llmdistill.stages.train.examples import build_examples, preflight
    from llmdistill.stages.train.trainers import make_trainer

    mode = {"sft-cot": "cot", "cot": "cot", "cot-packed": "cot", "sft-sbs": "step_by_step", "step_by_step": "step_by_step"}[arm]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(tmp, args.model, mode, arm == "cot-packed", args)
        generate(cfg)
        filter_traces(cfg)
        traces = read_rows(stage_dir(cfg, "filter") / "kept.jsonl", FilteredTrace)
        tok = load_tokenizer(args.model)
        examples, _ = preflight(cfg, build_examples(cfg, traces, tok), tok)
        if arm.startswith("sft-"):  # plain TRL: the same rows as prompt/completion pairs, token-mean loss
            import datasets
            from transformers import AutoModelForCausalLM
            from trl import SFTTrainer

            from llmdistill.stages.train.args import sft_config

            ds = datasets.Dataset.from_list([{"prompt": e.prompt, "completion": e.completion} for e in examples])
            trainer = SFTTrainer(
                model=AutoModelForCausalLM.from_pretrained(args.model, dtype="float32"),
                args=sft_config(cfg, tmp + "/ckpt", False),
                train_dataset=ds,
                processing_class=tok,
            )
        else:
            trainer = make_trainer(cfg, args.model, examples, tmp + "/ckpt")
        counts = []  # (real, padded) tokens of each batch the trainer collates, in order
        collate = trainer.data_collator

        def counting(examples):
            batch = collate(examples)
            if "attention_mask" in batch:
                counts.append((int(batch["attention_mask"].sum()), batch["attention_mask"].numel()))
            else:  # padding-free (packed): one flat row, no padding
                counts.append((batch["input_ids"].numel(), batch["input_ids"].numel()))
            return batch

        trainer.data_collator = counting
        timer = Timer(args.warmup)
        trainer.add_callback(timer)
        trainer.train()
        seconds = timer.t1 - timer.t0
        timed = counts[args.warmup : args.warmup + args.steps]
        real, padded = sum(c[0] for c in timed), sum(c[1] for c in timed)
        params = sum(p.numel() for p in trainer.model.parameters())
        return {
            "arm": arm,
            "examples": len(examples),
            "steps": args.steps,
            "seconds": round(seconds, 2),
            "real_tokens": real,
            "tokens_per_s": round(real / seconds, 1),
            "padding_waste": round(1 - real / max(padded, 1), 3),
            "peak_memory_mib": peak_memory_mib(),
            "params": params,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
        }


PADDING_ARMS = {  # name: train settings; every arm at batch --batch-size problems (label: examples = problems)
    "label_gold": {"mode": "label", "label_source": "gold", "gold_label": "as_written"},
    "step_by_step_gold (two tasks)": {"mode": "step_by_step", "label_source": "gold", "gold_label": "as_written"},
    "answer_first_gold": {"mode": "step_by_step", "layout": "answer_first", "label_source": "gold", "gold_label": "as_written"},
}


def padding_table(args) -> list[dict]:
    """``--padding``: the share of pad positions in one epoch of the batches each trainer would
    collate (its own sampler and collator, no training step), with random and with length-grouped
    batches. On CPU the cost of a step follows the padded tokens, so this is the compute saved."""
    sys.path.insert(0, str(ROOT))
    from llmdistill.backends.transformers import load_tokenizer
    from llmdistill.data import load_problems
    from llmdistill.jsonl import read_rows
    from llmdistill.records import FilteredTrace
    from llmdistill.stages.filter.run import filter_traces
    from llmdistill.stages.generate.run import generate
    from llmdistill.stages.train.examples import build_examples, preflight, tokenize_answer_first
    from llmdistill.stages.train.trainers import make_trainer

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, settings in PADDING_ARMS.items():
            for grouped in (False, True):
                cfg = config(tmp, args.model, "label", False, args)
                cfg = cfg.model_validate(
                    {
                        **cfg.model_dump(),
                        "train": {
                            **cfg.train.model_dump(exclude_unset=True),
                            **settings,
                            "group_by_length": grouped,
                            "batch_unit": "problems",
                            "max_steps": -1,
                        },
                    }
                )
                generate(cfg)
                filter_traces(cfg)
                traces = read_rows(stage_dir(cfg, "filter") / "kept.jsonl", FilteredTrace)
                tok = load_tokenizer(args.model)
                examples, _ = preflight(cfg, build_examples(cfg, traces, tok, load_problems(cfg.data, "train")), tok)
                tokenized = tokenize_answer_first(examples, tok) if cfg.answer_first() else None
                trainer = make_trainer(cfg, args.model, examples, tmp + "/ckpt", tokenized)
                real = padded = 0
                for batch in trainer.get_train_dataloader():
                    real += int(batch["attention_mask"].sum())
                    padded += batch["attention_mask"].numel()
                rows.append(
                    {
                        "arm": name,
                        "grouped": grouped,
                        "real_tokens": real,
                        "padded_tokens": padded,
                        "padding_waste": round(1 - real / padded, 3),
                    }
                )
                print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def run_qwen(args) -> dict:
    """A randomly initialised Qwen2.5-0.5B-shaped model in bf16 on the GPU: tokens/s and MFU."""
    sys.path.insert(0, str(ROOT))
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    cfgq = Qwen2Config(
        vocab_size=151936,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        tie_word_embeddings=True,
        torch_dtype="bfloat16",
    )
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(cfgq, dtype=torch.bfloat16)
        model.save_pretrained(tmp + "/qwen")
        from llmdistill.backends.transformers import load_tokenizer

        load_tokenizer(args.model).save_pretrained(tmp + "/qwen")  # SmolLM2's tokenizer; ids fit Qwen's larger vocab
        args2 = argparse.Namespace(**{**vars(args), "model": tmp + "/qwen", "batch_size": args.qwen_batch_size})
        out = run_arm("step_by_step", args2)
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    n = out["params"]
    out["arm"] = "qwen2.5-0.5b-shape step_by_step bf16"
    out["gpu"] = name
    out["mfu"] = round(6 * n * out["tokens_per_s"] / (peak * 1e12), 4) if peak else None
    return out


def main(args) -> None:
    if args.padding:
        rows = padding_table(args)
        print(f"\n{date.today()} · {args.model} · one epoch of batches of {args.batch_size} problems\n")
        print("| arm | padding waste, random batches | grouped by length | padded tokens per epoch, random -> grouped |\n|---|---|---|---|")
        for plain, grouped in zip(rows[::2], rows[1::2]):
            print(
                f"| {plain['arm']} | {plain['padding_waste']:.1%} | {grouped['padding_waste']:.1%} | {plain['padded_tokens']:,} -> {grouped['padded_tokens']:,} "
                f"({grouped['padded_tokens'] / plain['padded_tokens'] - 1:+.1%}) |"
            )
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
        return
    results = {"date": str(date.today()), "host": platform.node(), "cpus": os.cpu_count(), "model": args.model, "arms": []}
    arms = ARMS + (["qwen"] if args.qwen else [])
    for arm in arms:
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--arm",
                arm,
                "--model",
                args.model,
                "--steps",
                str(args.steps),
                "--warmup",
                str(args.warmup),
                "--batch-size",
                str(args.batch_size),
                "--qwen-batch-size",
                str(args.qwen_batch_size),
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode:
            sys.exit(f"arm {arm} failed:\n{proc.stderr[-3000:]}")
        results["arms"].append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(results["arms"][-1]), file=sys.stderr)
    by = {a["arm"]: a for a in results["arms"]}
    print(f"\n{results['date']} · {results['cpus']} CPUs · {args.model} · {args.steps} timed steps of batch {args.batch_size}\n")
    print("| arm | tokens/s | vs plain SFTTrainer | padding waste | peak memory MiB |\n|---|---|---|---|---|")
    base = {"cot": "sft-cot", "step_by_step": "sft-sbs", "cot-packed": "sft-cot"}
    for a in results["arms"]:
        ref = by.get(base.get(a["arm"], ""))
        ratio = f"{a['tokens_per_s'] / ref['tokens_per_s']:.3f}x" if ref else "-"
        print(f"| {a['arm']} | {a['tokens_per_s']} | {ratio} | {a['padding_waste']:.1%} | {a['peak_memory_mib']} |")
        if a.get("mfu") is not None:
            print(f"\nMFU ({a['gpu']}): {a['mfu']:.1%}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(ROOT / "models" / "SmolLM2-135M-Instruct"))
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--qwen", action="store_true", help="add the Qwen2.5-0.5B-shaped bf16 arm (CUDA only)")
    p.add_argument("--qwen-batch-size", type=int, default=16)
    p.add_argument("--json")
    p.add_argument(
        "--padding", action="store_true", help="only the padding of one epoch's batches, random against grouped by length (no training)"
    )
    p.add_argument("--arm", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.arm == "qwen":
        print(json.dumps(run_qwen(a)))
    elif a.arm:
        print(json.dumps(run_arm(a.arm, a)))
    else:
        main(a)
