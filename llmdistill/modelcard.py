"""The student's model card (``README.md`` in the model folder): where it came from, what it was
trained on and how, its training metrics, and -- once the evaluate stage has run -- its accuracy
against the teacher's on the test split."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from llmdistill.config import Config
from llmdistill.stage import read_stats
from llmdistill.train_data import student_shots, student_task

EVAL_HEADING = "## Evaluation"


def _front_matter(cfg: Config, base: str) -> str:
    meta = {
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "base_model": base,
        "tags": ["llmdistill", "distillation", f"mode-{cfg.train.mode}"] + ([f"kd-{cfg.kd.method}"] if cfg.kd.method != "none" else []),
    }
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def write_model_card(cfg: Config, model_dir: Path, stats: dict) -> None:
    filt = read_stats(cfg, "filter") or {}
    base = cfg.student.model_name_or_path if cfg.student.init == "pretrained" else f"{cfg.student.model_name_or_path or cfg.teacher.model_name_or_path} (depth-pruned: layers {cfg.student.keep_layers})"
    settings = {"student": cfg.student.model_dump(mode="json"), "train": cfg.train.model_dump(mode="json"), "kd": cfg.kd.model_dump(mode="json")}
    pre = (stats.get("sft") or {}).get("preflight") or {}
    lines = [
        _front_matter(cfg, cfg.student.model_name_or_path or cfg.teacher.model_name_or_path),
        f"# Student distilled from {cfg.teacher.model_name_or_path}",
        "",
        f"Trained by [llmdistill](https://github.com/) (`{cfg.train.mode}` objective"
        + (f", then {cfg.kd.method} logit distillation" if cfg.kd.method != "none" else "") + f"). Initialised from {base}.",
        "",
        "## Training data",
        "",
        f"- problems: `{cfg.data.path}` split `{cfg.data.train_split}`; prompt file `{cfg.data.prompt}`",
        f"- teacher traces: {cfg.teacher.model_name_or_path} ({cfg.teacher.backend}); the filter kept {filt.get('kept', '?')} of "
        f"{filt.get('traces', filt.get('rows_in', '?'))} (rejected by: {json.dumps(filt.get('rejected_by', {}))})",
        f"- training examples: {stats.get('examples')} {json.dumps(pre.get('by_task', {}))}, {pre.get('validation_examples', 0)} held out for validation",
        "",
        "## Training",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for key in ("steps", "train_loss", "best_eval_loss", "tokens_seen", "tokens_per_s"):
        if stats.get(key) is not None:
            lines.append(f"| {key} | {stats[key]} |")
    lines += ["", "Settings:", "", "```yaml", yaml.safe_dump(settings, sort_keys=False).rstrip(), "```", "",
              "## Use", "",
              f"The student answers the `{student_task(cfg)}` prompt of `{cfg.data.prompt}` with {student_shots(cfg)} exemplar(s)"
              + (" and writes only the answer (no rationale)." if student_task(cfg) == "label" else ", rationale then answer."),
              "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
              f"model = AutoModelForCausalLM.from_pretrained(\"{model_dir}\")", f"tokenizer = AutoTokenizer.from_pretrained(\"{model_dir}\")", "```", ""]
    (model_dir / "README.md").write_text("\n".join(lines))


def add_evaluation(model_dir: Path, report: dict, report_md: str) -> None:
    """Replace the card's evaluation section with the headline numbers and the report's table."""
    from llmdistill.report import fmt_accuracy

    card = model_dir / "README.md"
    if not card.is_file():
        return
    text = card.read_text()
    text = re.split(rf"\n{re.escape(EVAL_HEADING)}\n", text)[0].rstrip() + "\n"
    m = report["models"]
    head = [f"On the {report['split']} split ({report['problems']} problems), greedy: student {fmt_accuracy(m['student'])}"]
    if "teacher" in m:
        head.append(f"teacher {fmt_accuracy(m['teacher'])}")
    if "student_init" in m:
        head.append(f"untrained student {fmt_accuracy(m['student_init'])}")
    headline = ", ".join(head) + (f"; gap closed {100 * report['gap_closed']:.1f}%." if report.get("gap_closed") is not None else ".")
    table = report_md.split("\n## ")[0]  # the main table and its notes, without pairs and samples
    body = re.sub(r"^# .*\n", "", table).replace("![accuracy against size and latency](accuracy.png)", "").strip()
    card.write_text(f"{text}\n{EVAL_HEADING}\n\n{headline}\n\n{body}\n")
