"""The evaluation report: ``report.json`` for machines, ``report.md`` for people."""

from __future__ import annotations

import json
import os
from pathlib import Path

LABELS = {"teacher": "teacher", "student_init": "student (before training)", "student": "student (after training)"}


def _fmt_params(n: int | None) -> str:
    return "-" if not n else f"{n / 1e6:.1f}M"


def _fmt_size(n: int | None) -> str:
    return "-" if not n else f"{n / 2**20:.0f} MiB"


def render_markdown(report: dict) -> str:
    lines = [
        f"# Evaluation on the {report['split']} split ({report['problems']} problems)",
        "",
        "| model | prompt | params | size | accuracy | correct | wrong | unparseable | output tokens/problem | latency/problem |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in report["models"].items():
        acc = "-" if m["accuracy"] is None else f"{100 * m['accuracy']:.1f}%"
        lines.append(
            f"| {LABELS.get(name, name)} | {m.get('prompt', '-')} | {_fmt_params(m['parameters'])} | {_fmt_size(m['size_bytes'])} | {acc} | {m['correct']} | {m['wrong']} "
            f"| {m['unparseable']} | {m['output_tokens_per_problem']} | {m['latency_s_per_problem'] * 1000:.0f} ms |"
        )
    lines += ["", "Every model decodes greedily and is scored by the same answer checker. The teacher gets the few-shot "
              "chain-of-thought prompt (`cot`); the student, before and after training, the prompt it is trained on "
              "(`label`: the answer alone, for the label and step-by-step objectives).", ""]
    return "\n".join(lines)


def write_report(out_dir: Path, report: dict) -> None:
    for name, text in (("report.json", json.dumps(report, indent=2)), ("report.md", render_markdown(report))):
        tmp = out_dir / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out_dir / name)
