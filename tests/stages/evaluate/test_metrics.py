"""Evaluation statistics and the report: McNemar, agreement tables, bootstrap CIs, gap closed, pass@k."""

import json
from math import comb

import pytest

from llmdistill.records import EvalResult, Problem
from llmdistill.stages.evaluate.metrics import agreement, bootstrap_ci, gap_closed, mcnemar_exact, pass_at_k
from llmdistill.stages.evaluate.report import compare, render_markdown, write_report


def _results(model: str, verdicts: str) -> list[EvalResult]:
    v = {"c": "correct", "w": "wrong", "u": "unparseable"}
    return [
        EvalResult(
            id=f"p{i}",
            model=model,
            question=f"q{i}",
            gold="1",
            output=f"out {x}",
            pred=None if x == "u" else "1",
            verdict=v[x],
            latency_s=0.5 if model == "teacher" else 0.1,
        )
        for i, x in enumerate(verdicts)
    ]


def test_mcnemar_exact_by_hand():
    # 1 vs 7 discordant pairs: p = 2 * (C(8,0) + C(8,1)) / 2^8 = 18/256
    assert mcnemar_exact(1, 7) == pytest.approx(18 / 256)
    assert mcnemar_exact(7, 1) == pytest.approx(18 / 256)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(3, 3) == 1.0  # capped at 1
    assert mcnemar_exact(0, 10) == pytest.approx(2 / 1024)
    assert mcnemar_exact(2, 10) == pytest.approx(2 * sum(comb(12, i) for i in range(3)) / 2**12)


def test_agreement_table():
    a = [True, True, False, False, True]
    b = [True, False, True, False, False]
    assert agreement(a, b) == {"both": 1, "only_a": 2, "only_b": 1, "neither": 1}
    with pytest.raises(ValueError):
        agreement(a, b[:3])


def test_bootstrap_ci_cases():
    assert bootstrap_ci([True] * 20) == (1.0, 1.0)
    assert bootstrap_ci([]) is None
    lo, hi = bootstrap_ci([True] * 77 + [False] * 23, n_boot=20000)
    # normal approximation: 0.77 +- 1.96 * sqrt(0.77 * 0.23 / 100) = [0.6875, 0.8525]
    assert lo == pytest.approx(0.6875, abs=0.015) and hi == pytest.approx(0.8525, abs=0.015)
    assert bootstrap_ci([True, False] * 30, seed=3) == bootstrap_ci([True, False] * 30, seed=3)  # seeded


def test_gap_closed_and_pass_at_k():
    assert gap_closed(0.5, 0.2, 0.8) == pytest.approx(0.5)
    assert gap_closed(0.1, 0.2, 0.8) == pytest.approx(-1 / 6)
    assert gap_closed(0.5, 0.2, 0.2) is None and gap_closed(None, 0.2, 0.8) is None
    assert pass_at_k(4, 1, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - comb(3, 2) / comb(4, 2))
    assert pass_at_k(4, 0, 3) == 0.0 and pass_at_k(4, 2, 3) == 1.0


def test_compare_and_render(tmp_path):
    problems = [Problem(id=f"p{i}", question=f"q{i}", answer="1") for i in range(6)]
    results = _results("teacher", "cccccw") + _results("student_init", "wwuuww") + _results("student", "cccwwu")
    models = {
        name: {
            "accuracy": acc,
            "correct": 0,
            "wrong": 0,
            "unparseable": 0,
            "parameters": p,
            "size_bytes": None,
            "output_tokens_per_problem": 10,
            "latency_s_per_problem": lat,
            "prompt": "cot, 2 shots",
        }
        for name, acc, p, lat in (("teacher", 5 / 6, 1e9, 0.5), ("student_init", 0.0, 1e8, 0.1), ("student", 0.5, 1e8, 0.1))
    }
    report = {"split": "test", "problems": 6, "models": models, **compare(results, models, problems, 1000, 0.95, 0, 2)}
    assert report["gap_closed"] == pytest.approx(0.5 / (5 / 6))
    pair = next(p for p in report["pairs"] if p["a"] == "teacher" and p["b"] == "student")
    assert (pair["both"], pair["only_a"], pair["only_b"], pair["neither"]) == (3, 2, 0, 1)
    assert pair["mcnemar_p"] == pytest.approx(0.5)
    assert models["student"]["speedup_vs_teacher"] == 5.0
    assert [d["id"] for d in report["disagreements"]] == ["p3", "p4"]
    write_report(tmp_path, report)
    md = (tmp_path / "report.md").read_text()
    assert "| student (after training) | cot, 2 shots |" in md and "50.0% [" in md and "Gap closed**: 60.0%" in md
    assert "| teacher | student (after training) | 3 | 2 | 0 | 1 | 0.5 |" in md
    assert (tmp_path / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "report.json").read_text())["plot"] == "accuracy.png"


def test_the_accuracy_plot_reads_for_two_to_eight_models(tmp_path):
    from llmdistill.stages.evaluate.report import dodge, format_count, format_latency, plot_accuracy

    assert [format_count(v) for v in (99.1e6, 134.5e6, 1.5e9, 494e6)] == ["99.1M", "134M", "1.5B", "494M"]
    assert [format_latency(v) for v in (270.4, 881, 1365)] == ["270 ms", "881 ms", "1.36 s"]
    spread = dodge([134e6, 134e6, 134e6, 494e6])
    assert len(set(spread)) == 4 and spread[3] == 494e6 and max(spread[:3]) / min(spread[:3]) < 1.1
    models = {
        f"m{i}": {
            "accuracy": 0.1 * i,
            "ci": [0.1 * i - 0.05, 0.1 * i + 0.05],
            "parameters": 134e6 * (1 + i % 2),
            "latency_s_per_problem": 0.3 * (1 + i),
        }
        for i in range(7)
    }
    models["teacher"] = {"accuracy": 0.77, "ci": [0.7, 0.83], "parameters": None, "latency_s_per_problem": None}  # replayed
    assert plot_accuracy({"split": "test", "problems": 200, "models": models}, tmp_path / "a.png")
    assert (tmp_path / "a.png").stat().st_size > 10000


def test_report_shows_tiny_p_values_and_no_timing_for_a_replayed_teacher():
    """A McNemar p of 2e-48 is written as such, not rounded to 0; a replayed teacher spent no time
    and counted no tokens, so its cells say '-' rather than '0 ms'."""
    n = 160
    problems = [Problem(id=f"p{i}", question=f"q{i}", answer="1") for i in range(n)]
    results = _results("teacher", "c" * n) + _results("student", "w" * n)
    models = {
        "teacher": {
            "backend": "replay",
            "accuracy": 1.0,
            "correct": n,
            "wrong": 0,
            "unparseable": 0,
            "parameters": None,
            "size_bytes": None,
            "output_tokens_per_problem": 0.0,
            "latency_s_per_problem": 0.0,
            "prompt": "cot, 2 shots",
        },
        "student": {
            "backend": "transformers",
            "accuracy": 0.0,
            "correct": 0,
            "wrong": n,
            "unparseable": 0,
            "parameters": 1e8,
            "size_bytes": None,
            "output_tokens_per_problem": 5.0,
            "latency_s_per_problem": 0.1,
            "prompt": "label, 0 shots",
        },
    }
    report = {"split": "test", "problems": n, "models": models, **compare(results, models, problems, 200, 0.95, 0, 2)}
    assert 0 < report["pairs"][0]["mcnemar_p"] < 1e-40
    md = render_markdown(report)
    assert next(x for x in md.splitlines() if x.startswith("| teacher | cot")).endswith("| - | - | - |")
    assert "e-48 |" in next(x for x in md.splitlines() if x.startswith("| teacher | student (after training) |"))
