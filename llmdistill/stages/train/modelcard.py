"""The student's model card (``README.md`` in the model folder): where it came from, what it was
trained on and how, and its training metrics. The evaluate stage adds its own section."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from llmdistill.atomic import write_text
from llmdistill.config import Config
from llmdistill.outputs import read_stats


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
    base = (
        cfg.student.model_name_or_path
        if cfg.student.init == "pretrained"
        else f"{cfg.student.model_name_or_path or cfg.teacher.model_name_or_path} (depth-pruned: layers {cfg.student.keep_layers})"
    )
    settings = {
        "student": cfg.student.model_dump(mode="json"),
        "train": cfg.train.model_dump(mode="json"),
        "kd": cfg.kd.model_dump(mode="json"),
    }
    pre = (stats.get("sft") or {}).get("preflight") or {}
    lines = [
        _front_matter(cfg, cfg.student.model_name_or_path or cfg.teacher.model_name_or_path),
        f"# Student distilled from {cfg.teacher.model_name_or_path}",
        "",
        f"Trained by llmdistill (`{cfg.train.mode}` objective"
        + (f", then {cfg.kd.method} logit distillation" if cfg.kd.method != "none" else "")
        + f"). Initialised from {base}.",
        "",
        "## Training data",
        "",
        f"- problems: `{cfg.data.path}` split `{cfg.data.train_split}`; prompt file `{cfg.data.prompt}`",
        f"- teacher traces: {cfg.teacher.model_name_or_path} ({cfg.teacher.backend}); the filter kept {filt.get('kept', '?')} of "
        f"{filt.get('traces', filt.get('rows_in', '?'))} (rejected by: {json.dumps(filt.get('rejected_by', {}))})",
        f"- examples: {stats.get('examples')} {json.dumps(pre.get('by_task', {}))}, of them {pre.get('validation_examples', 0)} held out for validation (not trained on)",
        "",
        "## Training",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for key in ("steps", "train_loss", "best_eval_loss", "tokens_seen", "tokens_per_s"):
        if stats.get(key) is not None:
            lines.append(f"| {key} | {stats[key]} |")
    lines += [
        "",
        "Settings:",
        "",
        "```yaml",
        yaml.safe_dump(settings, sort_keys=False).rstrip(),
        "```",
        "",
        "## Use",
        "",
        f"The student answers the `{cfg.student_task()}` prompt of `{cfg.data.prompt}` with {cfg.student_shots()} exemplar(s)"
        + (
            ' and writes its answer, then a blank line and its rationale: stop it at the blank line (stop string "\\n\\n") for the answer alone.'
            if cfg.answer_first()
            else " and writes only the answer (no rationale)."
            if cfg.student_task() == "label"
            else ", rationale then answer."
        ),
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        f'model = AutoModelForCausalLM.from_pretrained("{model_dir}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{model_dir}")',
        "```",
        "",
    ]
    write_text(model_dir / "README.md", "\n".join(lines))
