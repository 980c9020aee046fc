"""``llmdistill curve`` end to end on the quickstart config (PaLM's SVAMP traces replayed, a tiny
student, two fractions x two modes), its resume after a SIGKILL, and its one-line refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmdistill.cli import app
from llmdistill.stages.train.examples import in_validation, subset_rank
from tests.conftest import ROOT
from tests.processes import kill_when

QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")


def overrides(out, student) -> list[str]:
    sets = [
        f"output_dir={out}",
        f"student.model_name_or_path={student}",
        "data.max_train=40",
        "data.max_test=6",
        "train.max_steps=4",
        "train.per_device_train_batch_size=2",
        "train.max_length=1024",
        "train.on_overlength=drop",
        "train.validation_fraction=0.25",
        "train.eval_steps=2",
        "train.select_on=accuracy",
        "train.eval_max_new_tokens=8",
        "train.preflight_probe=false",
        "evaluate.max_new_tokens=8",
        "evaluate.batch_size=6",
    ]
    return [x for s in sets for x in ("--set", s)]


def curve_args(out, student, *extra) -> list[str]:
    return ["curve", QUICKSTART, *overrides(out, student), "--fractions", "0.25", "--fractions", "1.0", *extra]


def test_the_curve_on_the_quickstart_config(tiny_model, tmp_path):
    out = tmp_path / "run"
    # (the untrained student is the curve's floor: evaluated whether or not evaluate.models names it)
    result = CliRunner().invoke(app, curve_args(out, tiny_model, "--set", "evaluate.models=[teacher,student]"))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "curve" / "curve.json").read_text())
    points = {(p["mode"], p["fraction"]): p for p in report["points"]}
    assert set(points) == {("label", 0.25), ("label", 1.0), ("step_by_step", 0.25), ("step_by_step", 1.0)}
    assert all(p["status"] == "done" and 0 <= p["accuracy"] <= 1 for p in points.values())
    assert report["test_problems"] == 6 and set(report["reference"]) == {"teacher", "student_init"}
    # nested subsets, and an epoch budget: the 25% points train a quarter of the steps, about
    quarter, full = points[("label", 0.25)], points[("label", 1.0)]
    assert 0 < quarter["problems"] < full["problems"] and quarter["kept_traces"] < full["kept_traces"]
    assert full["max_steps"] == 4 and quarter["max_steps"] == max(1, round(4 * quarter["problems"] / full["problems"]))
    # one validation set for every fraction: held out of the whole split first
    held = {}
    for name, p in points.items():
        examples = [json.loads(line) for line in Path(p["folder"], "train", "examples.jsonl").read_text().splitlines()]
        held[name] = {e["id"] for e in examples if e["split"] == "validation"}
        trained = {e["id"] for e in examples if e["split"] == "train"}
        assert not trained & held[name]
        assert all(subset_rank(i) < p["fraction"] or p["fraction"] == 1.0 for i in trained)
    expected = {f"train-{i}" for i in range(40) if in_validation(f"train-{i}", 0.25, 0)}  # (SVAMP rows have no id: train-<row>)
    assert expected and all(h == expected for h in held.values())
    # the report, its picture, the paired tests between the modes
    md = (out / "curve" / "report.md").read_text()
    assert "| 25% |" in md and "| 100% |" in md and "McNemar" in md and "![" in md
    assert (out / "curve" / "curve.png").stat().st_size > 10_000
    assert {(t["fraction"], t["a"], t["b"]) for t in report["between_modes"]} == {
        (0.25, "label", "step_by_step"),
        (1.0, "label", "step_by_step"),
    }
    assert [(t["mode"], t["from"], t["to"]) for t in report["trend"]] == [("label", 0.25, 1.0), ("step_by_step", 0.25, 1.0)]
    # each mode's smaller point against the other mode's full one, once (the same-fraction pair is above)
    assert [(t["mode"], t["fraction"], t["against"]) for t in report["against_full"]] == [
        ("label", 0.25, "step_by_step"),
        ("step_by_step", 0.25, "label"),
    ]
    assert [line.split(":")[0] for line in report["summary"][:2]] == [
        f"at {f} of the problems, step_by_step {100 * points[('step_by_step', x)]['accuracy']:.1f}% against label "
        f"{100 * points[('label', x)]['accuracy']:.1f}%"
        for f, x in (("25%", 0.25), ("100%", 1.0))
    ]
    # run again: every point is reused
    again = CliRunner().invoke(app, curve_args(out, tiny_model))
    assert again.exit_code == 0 and "(0 run now)" in again.output, again.output
    # the report of a wider grid from the points done: the 50% points listed, not run, no folder made
    wider = CliRunner().invoke(app, [*curve_args(out, tiny_model), "--fractions", "0.5", "--report-only"])
    assert wider.exit_code == 0 and "6 points (0 run now, 2 not done)" in wider.output, wider.output
    status = {(p["mode"], p["fraction"]): p["status"] for p in json.loads((out / "curve" / "curve.json").read_text())["points"]}
    assert status == {**dict.fromkeys(points, "done"), ("label", 0.5): "pending", ("step_by_step", 0.5): "pending"}
    assert sorted(p.name for p in (out / "curve" / "points").iterdir() if p.is_dir()) == sorted(f"{m}-f{f:g}-s0" for m, f in points)
    assert "4 of 6 points done" in (out / "curve" / "report.md").read_text()


def test_a_curve_killed_midway_resumes_without_redoing_a_finished_point(tiny_model, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "llmdistill", *curve_args(out, tiny_model, "--modes", "label", "--modes", "step_by_step")]
    first = out / "curve" / "points" / "label-f0.25-s0" / "evaluate" / "stats.json"
    second = out / "curve" / "points" / "step_by_step-f0.25-s0" / "train"
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when(proc, lambda: first.exists() and second.exists(), timeout_s=600)
    done_before = json.loads(first.read_text())["run_id"]
    rerun = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert json.loads(first.read_text())["run_id"] == done_before  # the finished point was reused, not redone
    assert "(3 run now)" in rerun.stdout
    report = json.loads((out / "curve" / "curve.json").read_text())
    assert [p["status"] for p in report["points"]] == ["done"] * 4


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--fractions", "0.001", "--fractions", "1.0"], "leaves no training problem: use a larger fraction"),
        (["--fractions", "0", "--fractions", "1.0"], "curve.fractions must be in (0, 1], got 0.0"),
        # as the README writes them: the values after a list option, up to the next option, are all its own
        (["--fractions", "0.25", "0.5", "0.5", "--seeds", "0"], "curve.fractions has a fraction twice"),
        (
            ["--fractions", "0.5", "1.0", "--modes", "label", "labels", "--seeds", "0", "1"],
            "curve.modes.1: Input should be 'label', 'cot' or 'step_by_step'",
        ),
        (["--fractions", "0.5", "--report-only"], "curve --report-only: no curve in "),
        (["--fractions", "0.5", "--report-only", "--overwrite"], "curve --report-only writes only the report: --overwrite has nothing"),
    ],
)
def test_fractions_that_cannot_make_a_point_are_refused_in_one_line(tiny_model, tmp_path, flags, message):
    args = ["curve", QUICKSTART, *overrides(tmp_path / "run", tiny_model), *flags]
    result = CliRunner().invoke(app, args)
    last = result.output.strip().splitlines()[-1]  # (after the progress bars of generate and filter, run first)
    assert result.exit_code == 2 and message in last and last.startswith("error: "), result.output
    assert not (tmp_path / "run" / "curve" / "points").exists() or not any((tmp_path / "run" / "curve" / "points").iterdir())


def test_a_fraction_with_problems_but_no_kept_trace_is_refused(tiny_model, tmp_path):
    """A share small enough to hold only problems whose PaLM traces the filter rejected."""
    from llmdistill.config.file import load_config
    from llmdistill.jsonl import iter_rows
    from llmdistill.pipeline import stage_function
    from llmdistill.records import FilteredTrace

    out = tmp_path / "run"
    sets = [*overrides(out, tiny_model), "--set", "data.max_train=200"]  # (the first 200 problems hold such a share)
    cfg = load_config(QUICKSTART, [sets[i + 1] for i in range(0, len(sets), 2)])
    stage_function("generate")(cfg)
    stage_function("filter")(cfg)
    kept = {t.id for t in iter_rows(out / "filter" / "kept.jsonl", FilteredTrace)}
    train = [f"train-{i}" for i in range(200) if not in_validation(f"train-{i}", 0.25, 0)]
    first_kept = min(subset_rank(i) for i in train if i in kept)
    below = sorted(subset_rank(i) for i in train if subset_rank(i) < first_kept)
    assert below, "every problem below the first kept one would have a trace: pick another case"
    fraction = f"{(below[-1] + first_kept) / 2:.6f}"
    result = CliRunner().invoke(app, ["curve", QUICKSTART, *sets, "--fractions", fraction, "--fractions", "1.0"])
    assert result.exit_code == 2, result.output
    assert f"leaves no kept teacher trace among its {len(below)} problems" in result.output


def test_a_points_budget_is_its_share_of_all_training_problems_whichever_fractions_are_asked(tiny_model, tmp_path):
    """``--fractions 0.25 0.5`` (the 1.0 points run before, or published): the 25% point trains a
    quarter of the recipe's steps, not half (a share of the largest fraction asked would double it)."""
    from llmdistill.config.file import load_config
    from llmdistill.curve.run import plan
    from llmdistill.pipeline import stage_function

    sets = [*overrides(tmp_path / "run", tiny_model), "--set", "train.max_steps=400"]
    values = [sets[i + 1] for i in range(0, len(sets), 2)]
    cfg = load_config(QUICKSTART, values)
    stage_function("generate")(cfg)
    stage_function("filter")(cfg)
    steps = {}
    for asked in ([0.25, 0.5], [0.25, 1.0], [0.25]):
        todo = plan(load_config(QUICKSTART, [*values, f"curve.fractions={json.dumps(asked)}", 'curve.modes=["label"]']))
        steps[tuple(asked)] = {p.fraction: c.train.max_steps for p, c in todo.configs.items()}
        whole = sum(1 for i in range(40) if not in_validation(f"train-{i}", 0.25, 0))
        assert todo.sizes[0][0.25]["share"] == todo.sizes[0][0.25]["problems"] / whole
    assert steps[(0.25, 0.5)][0.25] == steps[(0.25, 1.0)][0.25] == steps[(0.25,)][0.25] < steps[(0.25, 0.5)][0.5] < 400
    assert steps[(0.25, 1.0)][1.0] == 400


def test_the_svamp_figure_adds_the_published_full_data_points_to_the_curves_own(tmp_path, monkeypatch):
    """scripts/svamp_curve_figure.py: seed 0's finished points of the curve, the published 100% ones
    (three seeds) beside them; a curve on other test problems is refused."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import svamp_curve_figure as fig

    def point(mode, fraction, seed, accuracy, status="done"):
        ci = None if accuracy is None else [accuracy - 0.05, accuracy + 0.05]
        return {"mode": mode, "fraction": fraction, "seed": seed, "status": status, "accuracy": accuracy, "ci": ci}

    report = {
        "split": "test",
        "test_problems": 200,
        "confidence": 0.95,
        "points": [
            point("label", 0.25, 0, 0.2),
            point("label", 0.25, 1, 0.3),
            point("step_by_step", 0.25, 0, 0.3),
            point("step_by_step", 0.5, 0, None, "pending"),
        ],
        "curves": {},
        "reference": {"teacher": {"accuracy": 0.775, "ci": [0.7, 0.8]}},
    }
    for p in report["points"]:
        p.update(problems=196 if p["fraction"] == 0.25 else 368, kept_traces=151)
    published = json.loads((ROOT / "docs" / "svamp_recipe_seeds.json").read_text())
    merged = fig.with_published(report, published)
    assert {m: [(p["fraction"], p["accuracy"]) for p in c] for m, c in merged["curves"].items()} == {
        "label": [(0.25, 0.2), (1.0, published["arms"]["label"]["seed_accuracies"][0])],
        "step_by_step": [(0.25, 0.3), (1.0, published["arms"]["step_by_step"]["seed_accuracies"][0])],
    }
    assert merged["curves"]["label"][1]["seed_accuracies"] == published["arms"]["label"]["seed_accuracies"]
    assert sorted({p["fraction"] for p in merged["points"]}) == [0.25, 0.5, 1.0]  # the pending 50% point is a tick
    path = tmp_path / "curve.png"
    (tmp_path / "curve.json").write_text(json.dumps(report))
    fig.main(
        fig.argparse.Namespace(curve=str(tmp_path / "curve.json"), out=str(path), published=str(ROOT / "docs" / "svamp_recipe_seeds.json"))
    )
    assert path.stat().st_size > 10_000
    with pytest.raises(SystemExit, match="another set"):
        fig.with_published({**report, "test_problems": 100}, published)


def test_a_modes_line_does_not_cross_a_fraction_it_has_no_point_at():
    """A point not done (step-by-step at 50% while label's is done) cuts the line: it would seem to
    show an accuracy there."""
    from llmdistill.curve.report import line_runs

    grid = [0.25, 0.5, 1.0]
    assert line_runs([0.25, 0.5, 1.0], grid) == [[0.25, 0.5, 1.0]]
    assert line_runs([0.25, 1.0], grid) == [[0.25], [1.0]]
    assert line_runs([0.5, 1.0], grid) == [[0.5, 1.0]]
    assert line_runs([0.25, 1.0], [0.25, 1.0]) == [[0.25, 1.0]]


def test_a_one_seed_points_interval_is_the_one_its_evaluate_report_gives(tmp_path, monkeypatch):
    """The curve's interval of a one-seed point is its evaluate report's: the same bootstrap, with the
    config's level, resamples and seed, over the problems in the test split's order (sorted ids would
    put test-10 before test-2 and resample other problems)."""
    import llmdistill as ld
    from llmdistill.curve import report as curve_report
    from llmdistill.curve.run import Point, point_config
    from llmdistill.jsonl import write_rows
    from llmdistill.outputs import stage_dir
    from llmdistill.records import EvalResult, Problem
    from llmdistill.stages.evaluate.report import compare

    cfg = ld.load_config(
        QUICKSTART,
        [f"output_dir={tmp_path}", "evaluate.confidence=0.9", "evaluate.bootstrap=2000", "evaluate.seed=3", "curve.fractions=[0.5]"],
    )
    right = [i % 3 == 0 or i % 7 == 1 for i in range(200)]
    rows = [
        EvalResult(id=f"test-{i}", model="student", question="q", gold="1", output="1", pred="1", verdict="correct" if ok else "wrong")
        for i, ok in enumerate(right)
    ]
    problems = [Problem(id=r.id, question="q", answer="1") for r in rows]
    configs = {}
    for mode in ("label", "step_by_step"):
        point = Point(mode, 0.5, 0)
        pcfg = configs[point] = point_config(cfg, point, 0.5)
        folder = stage_dir(pcfg, "evaluate")
        folder.mkdir(parents=True)
        write_rows(folder / "results.jsonl", rows)
        models = {"student": {"accuracy": sum(right) / len(right)}}
        e = cfg.evaluate
        compare(rows, models, problems, e.bootstrap, e.confidence, e.seed, 0)
        (folder / "report.json").write_text(json.dumps({"models": models}))
    monkeypatch.setattr(curve_report, "is_complete", lambda c, stage: c in configs.values())
    size = {"problems": 10, "kept_traces": 8, "teacher_traces": 10, "teacher_tokens": 0}
    report = curve_report.collect(cfg, configs, {0: {0.5: size}}, cfg)
    assert report["confidence"] == 0.9 and report["test_problems"] == 200
    for mode in ("label", "step_by_step"):
        ((point,),) = [report["curves"][mode]]
        assert point["ci"] == models["student"]["ci"], (mode, point["ci"], models["student"]["ci"])
