"""The evaluation report: ``report.json`` for machines, ``report.md`` for people, and
``accuracy.png`` (accuracy with confidence intervals against model size and latency)."""

from __future__ import annotations

import json
import logging
import re
from itertools import combinations
from pathlib import Path
from typing import Any

from llmdistill.atomic import write_text
from llmdistill.records import EvalResult, Problem
from llmdistill.stages.evaluate.metrics import agreement, bootstrap_ci, gap_closed, mcnemar_exact

log = logging.getLogger(__name__)

EVAL_HEADING = "## Evaluation"  # the model card section the evaluate stage owns
LABELS = {"teacher": "teacher", "student_init": "student (before training)", "student": "student (after training)"}


def compare(
    results: list[EvalResult], models: dict, problems: list[Problem], n_boot: int, level: float, seed: int, n_disagree: int
) -> dict:
    """Adds each model's CI and speed-up to ``models``; returns the pairwise tests, the gap
    closed and sample disagreements (greedy answers only)."""
    greedy = {name: {r.id: r for r in results if r.model == name and r.sample == 0} for name in models}
    order = [p.id for p in problems if p.answer is not None]
    correct = {name: [greedy[name][pid].verdict == "correct" for pid in order] for name in models}
    teacher_latency = models.get("teacher", {}).get("latency_s_per_problem")
    for name, m in models.items():
        ci = bootstrap_ci(correct[name], n_boot, level, seed)
        m["ci"] = [round(ci[0], 4), round(ci[1], 4)] if ci else None
        lat = m.get("latency_s_per_problem")
        m["speedup_vs_teacher"] = round(teacher_latency / lat, 2) if teacher_latency and lat else None
    pairs = []
    for a, b in combinations(models, 2):
        table = agreement(correct[a], correct[b])
        pairs.append(
            {"a": a, "b": b, **table, "mcnemar_p": float(f"{mcnemar_exact(table['only_a'], table['only_b']):.3g}")}
        )  # 3 significant digits: 2e-47 is not 0
    acc = {k: m["accuracy"] for k, m in models.items()}
    gap = gap_closed(acc.get("student"), acc.get("student_init"), acc.get("teacher"))
    disagreements: list[dict] = []
    if "teacher" in models and "student" in models:
        for pid in order:
            t, s = greedy["teacher"][pid], greedy["student"][pid]
            if (t.verdict == "correct") != (s.verdict == "correct") and len(disagreements) < n_disagree:
                disagreements.append(
                    {
                        "id": pid,
                        "question": t.question,
                        "gold": t.gold,
                        "teacher": {"pred": t.pred, "verdict": t.verdict, "output": t.output[:400]},
                        "student": {"pred": s.pred, "verdict": s.verdict, "output": s.output[:400]},
                    }
                )
    return {
        "confidence": level,
        "bootstrap": n_boot,
        "pairs": pairs,
        "gap_closed": None if gap is None else round(gap, 4),
        "disagreements": disagreements,
    }


def _fmt_params(n: int | None) -> str:
    return "-" if not n else f"{n / 1e6:.1f}M"


def _fmt_size(n: int | None) -> str:
    return "-" if not n else f"{n / 2**20:.0f} MiB"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def fmt_accuracy(m: dict) -> str:
    acc = _pct(m["accuracy"])
    return acc if not m.get("ci") else f"{acc} [{100 * m['ci'][0]:.1f}, {100 * m['ci'][1]:.1f}]"


def render_markdown(report: dict) -> str:
    level = round(100 * report.get("confidence", 0.95))
    sampled = any("n_samples" in m for m in report["models"].values())
    lines = [
        f"# Evaluation on the {report['split']} split ({report['problems']} problems)",
        "",
        f"| model | prompt | params | size | accuracy [{level}% CI] | correct | wrong | unparseable |"
        + (" maj@n | pass@k |" if sampled else "")
        + " output tokens/problem | latency/problem | speed-up vs teacher |",
        "|---|---|---|---|---|---|---|---|" + ("---|---|" if sampled else "") + "---|---|---|",
    ]
    for name, m in report["models"].items():
        extra = ""
        if sampled:
            maj = next((v for k, v in m.items() if k.startswith("maj@")), None)
            passk = ", ".join(f"@{k} {_pct(v)}" for k, v in m.get("pass@k", {}).items()) or "-"
            extra = f" {_pct(maj) if maj is not None else '-'} (n={m.get('n_samples', '-')}) | {passk} |"
        speed = "-" if m.get("speedup_vs_teacher") is None else f"{m['speedup_vs_teacher']}x"
        replayed = m.get("backend") == "replay"  # recorded text: no tokens counted, no time spent
        tokens = "-" if replayed else m["output_tokens_per_problem"]
        latency = "-" if replayed else f"{m['latency_s_per_problem'] * 1000:.0f} ms"
        lines.append(
            f"| {LABELS.get(name, name)} | {m.get('prompt', '-')} | {_fmt_params(m['parameters'])} | {_fmt_size(m['size_bytes'])} | {fmt_accuracy(m)} "
            f"| {m['correct']} | {m['wrong']} | {m['unparseable']} |{extra} {tokens} | {latency} | {speed} |"
        )
    lines += [
        "",
        "Every model decodes greedily and is scored by the same answer checker; unparseable answers are counted "
        "on their own (and are not correct). The teacher gets the few-shot chain-of-thought prompt (`cot`); the student, "
        "before and after training, the prompt it is trained on (`label`: the answer alone, for the label and "
        f"step-by-step objectives). Intervals: percentile bootstrap over problems ({report.get('bootstrap', '-')} resamples).",
        "",
    ]
    if report.get("gap_closed") is not None:
        lines += [
            f"**Gap closed**: {100 * report['gap_closed']:.1f}% of the teacher's lead over the untrained student "
            "((student after - student before) / (teacher - student before)).",
            "",
        ]
    if report.get("pairs"):
        lines += [
            "## Paired comparisons",
            "",
            "| A | B | both right | only A | only B | neither | McNemar exact p |",
            "|---|---|---|---|---|---|---|",
        ]
        for p in report["pairs"]:
            lines.append(
                f"| {LABELS.get(p['a'], p['a'])} | {LABELS.get(p['b'], p['b'])} | {p['both']} | {p['only_a']} | {p['only_b']} | {p['neither']} | {p['mcnemar_p']:.3g} |"
            )
        lines.append("")
    if report.get("disagreements"):
        lines += ["## Sample disagreements (teacher vs student)", ""]
        for d in report["disagreements"]:
            lines += [
                f"**{d['id']}** (gold {d['gold']}): {d['question'][:300]}",
                "",
                f"- teacher ({d['teacher']['verdict']}, answered {d['teacher']['pred']}): {d['teacher']['output'][:300]!r}",
                f"- student ({d['student']['verdict']}, answered {d['student']['pred']}): {d['student']['output'][:300]!r}",
                "",
            ]
    if report.get("plot"):
        lines += [f"![accuracy against size and latency]({report['plot']})", ""]
    return "\n".join(lines)


MARKERS = "osD^vP*Xh<>p"


def format_count(value: float) -> str:
    """Parameter counts as people say them: 99M, 1.5B."""
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if value >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}"


def _log_ticks(ax, values: list[float], fmt) -> None:
    """A log axis with a few readable ticks at the data and no minor tick labels (matplotlib's
    defaults run '1.05x10^8 1.1x10^8 ...' together when the values are close)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    lo, hi = min(values), max(values)
    ax.set_xlim(lo / 1.6, hi * 1.6)
    keep: list[float] = []
    for t in sorted(set(values)):
        if not keep or t / keep[-1] > 1.3:  # neighbours closer than this would overprint
            keep.append(t)
    ax.xaxis.set_major_locator(FixedLocator(keep))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.tick_params(axis="x", labelrotation=25)


def format_latency(value: float) -> str:
    return f"{value:.0f} ms" if value < 1000 else f"{value / 1000:.3g} s"


def dodge(xs: list[float]) -> list[float]:
    """Spread points that share an x (within 3%) a little apart on the log axis, so none hides another."""
    out = list(xs)
    for i, x in enumerate(xs):
        same = [j for j, y in enumerate(xs) if abs(y / x - 1) < 0.03]
        if len(same) > 1:
            out[i] = x * 1.04 ** (same.index(i) - (len(same) - 1) / 2)
    return out


def plot_accuracy(report: dict, path: Path) -> bool:
    """Accuracy with CIs against parameters and against latency: one marker and colour per model,
    named in a legend below (labels written beside the points overprint for models of similar size)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = {k: m for k, m in report["models"].items() if m["accuracy"] is not None}
    if not any(m.get("parameters") or m.get("latency_s_per_problem") for m in models.values()):
        return False  # e.g. a replayed teacher alone: neither its size nor its latency is known
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    panels = (
        (axes[0], "parameters", "parameters", 1, format_count),
        (axes[1], "latency_s_per_problem", "latency per problem", 1000, format_latency),
    )
    handles: dict[str, Any] = {}  # a Line2D or an ErrorbarContainer per model (a legend takes either)
    for ax, key, label, scale, fmt in panels:
        placed = {name: (m.get(key) or 0) * scale for name, m in models.items()}
        xs = [x for x in placed.values() if x]
        dodged = dict(zip([n for n in placed if placed[n]], dodge(xs)))
        for name, m in models.items():
            color, marker, y = f"C{list(models).index(name)}", MARKERS[list(models).index(name) % len(MARKERS)], 100 * m["accuracy"]
            if name not in dodged:  # size or latency unknown (a replayed teacher): its accuracy as a line
                handle = ax.axhline(y, color=color, linestyle="--", linewidth=1.2)
            else:
                err = [[y - 100 * m["ci"][0]], [100 * m["ci"][1] - y]] if m.get("ci") else None
                handle = ax.errorbar([dodged[name]], [y], yerr=err, fmt=marker, markersize=8, capsize=4, color=color)
            handles.setdefault(name, handle)
        if xs:
            ax.set_xscale("log")
            _log_ticks(ax, xs, fmt)
        ax.set_xlabel(label + ("" if xs else " (not known for these models)"))
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(-3, 103)
        ax.grid(True, alpha=0.3)
    names = [LABELS.get(n, n) + (" (size unknown)" if not models[n].get("parameters") else "") for n in handles]
    fig.legend([handles[n] for n in handles], names, loc="lower center", ncol=min(4, len(handles)), frameon=False)
    fig.suptitle(f"{report['split']} split, {report['problems']} problems ({round(100 * report.get('confidence', 0.95))}% bootstrap CIs)")
    rows = (len(handles) + 3) // 4
    fig.tight_layout(rect=(0, 0.065 * rows, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_report(out_dir: Path, report: dict, plot: bool = True) -> None:
    if plot and plot_accuracy(report, out_dir / "accuracy.png"):
        report["plot"] = "accuracy.png"
    write_text(out_dir / "report.json", json.dumps(report, indent=2))
    write_text(out_dir / "report.md", render_markdown(report))


def add_to_model_card(model_dir: Path, report: dict, report_md: str) -> None:
    """Replace the card's evaluation section with the headline numbers and the report's table."""
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
    write_text(card, f"{text}\n{EVAL_HEADING}\n\n{headline}\n\n{body}\n")
