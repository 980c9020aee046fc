"""The SVAMP teacher-budget picture of docs/results.md: the curve's own points (``llmdistill curve
configs/svamp_palm.yaml``, its ``curve.json``) with the recipe's published 100% points beside them
(``docs/svamp_recipe_seeds.json``: three seeds run by ``scripts/reproduce_svamp.py`` with the same
recipe, whose per-problem answers are not kept here), drawn by the curve's own ``plot``.

Every point is seed 0 with its 95% bootstrap interval over the test problems; at 100% the dots are
the three seeds.

    .venv/bin/python scripts/svamp_curve_figure.py runs/svamp_palm/curve/curve.json docs/svamp_curve.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llmdistill.curve.report import plot

ROOT = Path(__file__).resolve().parents[1]


def with_published(report: dict, published: dict) -> dict:
    """``report`` with seed 0's points only (the finished ones drawn; every fraction of the grid a tick,
    so a line does not cross a point not done), and the published 100% points of each mode added."""
    if report["split"] != published["split"] or report["test_problems"] != published["test_problems"]:
        raise SystemExit(f"the curve is on {report['test_problems']} {report['split']} problems, the published points on another set")
    f = published["fraction"]
    points = [p for p in report["points"] if p["seed"] == 0 and p["fraction"] != f]  # the grid, points not done too
    curves: dict[str, list[dict]] = {}
    for p in points:
        if p["status"] == "done":
            curves.setdefault(p["mode"], []).append({**p, "seed_accuracies": [p["accuracy"]]})
    for mode, arm in published["arms"].items():
        if mode in curves:
            seeds = arm["seed_accuracies"]
            curves[mode].append({"fraction": f, "accuracy": seeds[0], "ci": arm["seed0_ci"], "seed_accuracies": seeds})
    ticks = [*points, {"fraction": f, "problems": published["problems"], "kept_traces": published["kept_traces"]}]
    return {**report, "points": ticks, "curves": {m: sorted(c, key=lambda p: p["fraction"]) for m, c in curves.items()}}


def main(args: argparse.Namespace) -> None:
    report = json.loads(Path(args.curve).read_text())
    published = json.loads(Path(args.published).read_text())
    merged = with_published(report, published)
    if not plot(merged, Path(args.out)):
        raise SystemExit(f"{args.curve} has no finished point to draw")
    drawn = {mode: [p["fraction"] for p in pts] for mode, pts in merged["curves"].items()}
    print(f"wrote {args.out}: {drawn}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("curve", help="the curve's curve.json")
    parser.add_argument("out", help="the picture to write (.png)")
    parser.add_argument("--published", default=str(ROOT / "docs" / "svamp_recipe_seeds.json"))
    main(parser.parse_args())
