"""The curve's report: ``curve.json`` (every number), ``report.md`` (the table and the reading) and
``curve.png`` (accuracy against the share of the training problems, per mode).

Per (mode, fraction) the accuracy is the mean over the seeds done, with a bootstrap interval over
the test problems of each problem's mean correctness. Paired tests are exact McNemar tests on the
same test problems: between modes at each fraction, between consecutive fractions of a mode
(where the curve still rises), and of each point against the other modes on every problem. With
several seeds the discordant pairs of the seeds are summed (each seed a repeat on the same problems).
"""

from __future__ import annotations

import json
import logging
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from llmdistill.atomic import write_text
from llmdistill.jsonl import iter_rows
from llmdistill.outputs import is_complete, stage_dir
from llmdistill.records import EvalResult
from llmdistill.stages.evaluate.metrics import bootstrap_ci, mcnemar_exact

if TYPE_CHECKING:
    from llmdistill.config import Config

log = logging.getLogger(__name__)
ALPHA = 0.05


def _correct(folder: Path, model: str) -> dict[str, bool]:
    """Problem id -> whether ``model``'s greedy answer is right (labelled problems only)."""
    return {
        r.id: r.verdict == "correct"
        for r in iter_rows(folder / "results.jsonl", EvalResult)
        if r.model == model and r.sample == 0 and r.verdict != "unlabeled"
    }


def _interval(matrix: np.ndarray, cfg: Config) -> list[float]:
    """Bootstrap interval of the mean accuracy: ``matrix`` is seeds x problems of 0/1, its columns in the
    evaluate stage's problem order. With one seed it is the interval the point's own evaluate report gives
    (the same function, resamples, level and seed)."""
    e = cfg.evaluate
    ci = bootstrap_ci(list(matrix.mean(axis=0)), e.bootstrap, e.confidence, e.seed)
    assert ci is not None  # the curve has a row only where the points share test problems
    return [round(ci[0], 4), round(ci[1], 4)]


def _paired(a: dict[int, dict[str, bool]], b: dict[int, dict[str, bool]], ids: list[str]) -> dict | None:
    """McNemar of two points over the seeds both have (discordant pairs summed over seeds)."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    only_a = sum(a[s][i] and not b[s][i] for s in seeds for i in ids)
    only_b = sum(b[s][i] and not a[s][i] for s in seeds for i in ids)
    return {"seeds": seeds, "only_a": only_a, "only_b": only_b, "mcnemar_p": float(f"{mcnemar_exact(only_a, only_b):.3g}")}


def collect(cfg: Config, configs: dict, sizes: dict, ref: Config) -> dict:
    """Every number of the curve from the point folders (points not done are listed as pending)."""
    c = cfg.curve
    results: dict[tuple[str, float], dict[int, dict[str, bool]]] = {}
    points = []
    for p, pcfg in configs.items():
        folder = stage_dir(pcfg, "evaluate")
        row = {
            "mode": p.mode,
            "fraction": p.fraction,
            "seed": p.seed,
            "folder": str(Path(pcfg.output_dir)),
            "max_steps": pcfg.train.max_steps,
            **{k: v for k, v in sizes[p.seed][p.fraction].items() if k != "share"},
            "status": "pending",
        }
        if is_complete(pcfg, "evaluate"):
            student = json.loads((folder / "report.json").read_text())["models"]["student"]
            row.update(status="done", accuracy=student["accuracy"], ci=student.get("ci"))
            results.setdefault((p.mode, p.fraction), {})[p.seed] = _correct(folder, "student")
        points.append(row)
    answered = [r for by_seed in results.values() for r in by_seed.values()]
    common = set.intersection(*(set(r) for r in answered)) if answered else set()
    ids = [i for i in answered[0] if i in common] if answered else []  # the test split's order, as evaluate resamples it
    curves: dict[str, list[dict]] = {}
    for mode in c.modes:
        for f in c.fractions:
            by_seed = results.get((mode, f))
            if not by_seed or not ids:
                continue
            m = np.array([[by_seed[s][i] for i in ids] for s in sorted(by_seed)], dtype=np.float64)
            first = sizes[c.seeds[0]][f]
            curves.setdefault(mode, []).append(
                {
                    "fraction": f,
                    "seeds": sorted(by_seed),
                    "accuracy": round(float(m.mean()), 4),
                    "seed_accuracies": [round(float(x), 4) for x in m.mean(axis=1)],
                    "ci": _interval(m, cfg),
                    "problems": first["problems"],
                    "kept_traces": first["kept_traces"],
                    "teacher_tokens": first["teacher_tokens"],
                }
            )
    between_modes = []
    for f in c.fractions:
        for i, a in enumerate(c.modes):
            for b in c.modes[i + 1 :]:
                if (a, f) in results and (b, f) in results and (t := _paired(results[(a, f)], results[(b, f)], ids)):
                    between_modes.append({"fraction": f, "a": a, "b": b, **t})
    trend = []
    for name, pts in curves.items():
        for lo, hi in pairwise(pts):
            t = _paired(results[(name, hi["fraction"])], results[(name, lo["fraction"])], ids)
            if t is None:
                continue
            delta = round(hi["accuracy"] - lo["accuracy"], 4)
            verdict = "flat" if t["mcnemar_p"] >= ALPHA else "rising" if delta > 0 else "falling"
            trend.append({"mode": name, "from": lo["fraction"], "to": hi["fraction"], "delta": delta, **t, "reading": verdict})
    full = max(c.fractions)
    acc = {(m, p["fraction"]): p["accuracy"] for m, pts in curves.items() for p in pts}
    against_full = []  # each smaller point against the other mode's full one (the same-fraction pair is in between_modes)
    for a in c.modes:
        for b in c.modes:
            if a == b or (b, full) not in results:
                continue
            for f in c.fractions:
                if f < full and (a, f) in results and (t := _paired(results[(a, f)], results[(b, full)], ids)):
                    against_full.append({"mode": a, "fraction": f, "against": b, "delta": round(acc[(a, f)] - acc[(b, full)], 4), **t})
    reference = {}
    if is_complete(ref, "evaluate"):
        rep = json.loads((stage_dir(ref, "evaluate") / "report.json").read_text())
        reference = {name: {"accuracy": m["accuracy"], "ci": m.get("ci")} for name, m in rep["models"].items()}
    return {
        "split": cfg.data.test_split,
        "test_problems": len(ids),
        "confidence": cfg.evaluate.confidence,
        "budget": c.budget,
        "recipe": {
            "max_steps": cfg.train.max_steps,
            "eval_steps": cfg.train.eval_steps,
            "validation_fraction": cfg.train.validation_fraction,
        },
        "points": points,
        "curves": curves,
        "reference": reference,
        "between_modes": between_modes,
        "trend": trend,
        "against_full": against_full,
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def summary(report: dict) -> list[str]:
    """The reading, in sentences: the modes compared at each fraction, where each mode still rises,
    and which points reach the full ones."""
    acc = {(m, p["fraction"]): p["accuracy"] for m, pts in report["curves"].items() for p in pts}
    lines = []
    for t in report["between_modes"]:
        a, b, f = acc[(t["a"], t["fraction"])], acc[(t["b"], t["fraction"])], t["fraction"]
        sig = "a difference" if t["mcnemar_p"] < ALPHA else "no difference within the noise"
        lines.append(
            f"at {100 * f:g}% of the problems, {t['b']} {_pct(b)} against {t['a']} {_pct(a)}: {100 * (b - a):+.1f} points "
            f"({t['only_b']} problems only {t['b']} gets right, {t['only_a']} only {t['a']}; McNemar p = {t['mcnemar_p']:.3g}, "
            f"seeds {t['seeds']}): {sig}"
        )
    for t in report["trend"]:
        words = {
            "rising": "still rising: more traces paid",
            "flat": "flat within the noise",
            "falling": "falling",
        }[t["reading"]]
        lines.append(
            f"{t['mode']} from {100 * t['from']:g}% to {100 * t['to']:g}% of the problems: {100 * t['delta']:+.1f} points "
            f"(McNemar p = {t['mcnemar_p']:.3g}, seeds {t['seeds']}): {words}"
        )
    for t in report["against_full"]:
        side = "above" if t["delta"] > 0 else "below" if t["delta"] < 0 else "level with"
        sig = "significant" if t["mcnemar_p"] < ALPHA else "not significant"
        lines.append(
            f"{t['mode']} on {100 * t['fraction']:g}% is {abs(100 * t['delta']):.1f} points {side} {t['against']} on "
            f"{100 * max(p['fraction'] for p in report['points']):g}% (p = {t['mcnemar_p']:.3g}, {sig})"
        )
    return lines


def render_markdown(report: dict) -> str:
    modes = list(report["curves"])
    fractions = sorted({p["fraction"] for p in report["points"]})
    done = sum(p["status"] == "done" for p in report["points"])
    lines = [
        f"# Teacher-budget curve ({report['split']} split, {report['test_problems']} test problems)",
        "",
        f"{done} of {len(report['points'])} points done. Budget: {report['budget']} (the recipe: {report['recipe']['max_steps']} steps on all the "
        f"problems, validation every {report['recipe']['eval_steps']}; with the epochs budget a fraction trains as many epochs, its steps scaled). Accuracy: mean over the seeds "
        f"done, {100 * report['confidence']:g}% bootstrap interval over the test problems.",
        "",
        "![accuracy against the share of training problems](curve.png)",
        "",
    ]
    if report["reference"]:
        lines += [
            "Reference: " + "; ".join(f"{k} {_pct(v['accuracy'])}" for k, v in report["reference"].items()),
            "",
        ]
    first = {f: next(p for p in report["points"] if p["fraction"] == f) for f in fractions}
    head = "| fraction | problems | kept traces | teacher traces | teacher tokens | " + " | ".join(modes) + " |"
    lines += [head, "|" + "---|" * (5 + len(modes))]
    for f in fractions:
        cells = []
        for m in modes:
            x = next((c for c in report["curves"][m] if c["fraction"] == f), None)
            cells.append(
                "-" if x is None else f"{_pct(x['accuracy'])} [{100 * x['ci'][0]:.1f}, {100 * x['ci'][1]:.1f}] (seeds {x['seeds']})"
            )
        p = first[f]
        lines.append(
            f"| {100 * f:g}% | {p['problems']} | {p['kept_traces']} | {p['teacher_traces']} | {p['teacher_tokens'] or '-'} | "
            + " | ".join(cells)
            + " |"
        )
    lines += ["", "Problems, traces and tokens: each fraction's training problems (the validation problems held out), for the first seed."]
    if not any(p["teacher_tokens"] for p in report["points"]):
        lines += ["(Teacher tokens: the teacher's backend recorded none, e.g. replayed outputs.)"]
    if report["between_modes"]:
        lines += [
            "",
            "## Between modes, at each fraction (paired, same test problems)",
            "",
            "| fraction | a | b | only a right | only b right | McNemar p |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {100 * t['fraction']:g}% | {t['a']} | {t['b']} | {t['only_a']} | {t['only_b']} | {t['mcnemar_p']:.3g} |"
            for t in report["between_modes"]
        ]
    reading = [f"- {s}" for s in report["summary"]] or ["- (not enough points done for a reading)"]
    lines += ["", "## Reading", "", *reading]
    lines += ["", "## Points", "", "| mode | fraction | seed | steps | status | accuracy | folder |", "|---|---|---|---|---|---|---|"]
    lines += [
        f"| {p['mode']} | {100 * p['fraction']:g}% | {p['seed']} | {p['max_steps']} | {p['status']} | {_pct(p.get('accuracy'))} | `{p['folder']}` |"
        for p in report["points"]
    ]
    return "\n".join(lines) + "\n"


def line_runs(fractions: list[float], grid: list[float]) -> list[list[float]]:
    """A mode's fractions (ascending) cut into the runs a line may join: never across a fraction of
    the grid the mode has no point at (a point not done yet), which a line would seem to show."""
    runs: list[list[float]] = []
    for f in fractions:
        if runs and not any(runs[-1][-1] < g < f for g in grid):
            runs[-1].append(f)
        else:
            runs.append([f])
    return runs


def plot(report: dict, path: Path) -> bool:
    """Accuracy against the share of training problems (log scale), per mode; each seed a dot;
    the reference models as lines. A mode's line joins neighbouring fractions of the grid only."""
    if not report["curves"]:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    grid = sorted({p["fraction"] for p in report["points"]})
    for k, (mode, pts) in enumerate(report["curves"].items()):
        xs = [p["fraction"] * (1 + 0.02 * (k - (len(report["curves"]) - 1) / 2)) for p in pts]  # modes side by side
        ys = [100 * p["accuracy"] for p in pts]
        err = [[y - 100 * p["ci"][0] for y, p in zip(ys, pts, strict=True)], [100 * p["ci"][1] - y for y, p in zip(ys, pts, strict=True)]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=4, linestyle="none", color=f"C{k}", label=mode)
        at = {p["fraction"]: (x, y) for x, y, p in zip(xs, ys, pts, strict=True)}
        for run in line_runs([p["fraction"] for p in pts], grid):
            ax.plot([at[f][0] for f in run], [at[f][1] for f in run], color=f"C{k}")
        for x, p in zip(xs, pts, strict=True):
            if len(p["seed_accuracies"]) > 1:
                ax.scatter([x] * len(p["seed_accuracies"]), [100 * a for a in p["seed_accuracies"]], s=10, color=f"C{k}", alpha=0.4)
    for j, (name, m) in enumerate(report["reference"].items()):
        if m["accuracy"] is not None:
            ax.axhline(
                100 * m["accuracy"],
                linestyle="--",
                linewidth=1,
                color=f"C{len(report['curves']) + j}",
                label=f"{name} {_pct(m['accuracy'])}",
            )
    first = {f: next(p for p in report["points"] if p["fraction"] == f) for f in grid}
    ax.set_xscale("log", base=2)
    ax.set_xticks(grid)
    ax.set_xticklabels([f"{100 * f:g}%\n{first[f]['problems']} problems\n{first[f]['kept_traces']} traces" for f in grid], fontsize=8)
    ax.minorticks_off()
    ax.set_xlabel("share of the training problems (and the kept teacher traces in it)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(
        f"{report['split']} split, {report['test_problems']} problems ({100 * report['confidence']:g}% bootstrap intervals)", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_curve_report(cfg: Config, folder: Path, configs: dict, sizes: dict, ref: Config) -> dict:
    report = collect(cfg, configs, sizes, ref)
    report["summary"] = summary(report)
    if cfg.evaluate.plot and plot(report, folder / "curve.png"):
        report["plot"] = "curve.png"
    write_text(folder / "curve.json", json.dumps(report, indent=2))
    write_text(folder / "report.md", render_markdown(report))
    return report
