"""Data as users bring it, in the real row shapes of public datasets (fixtures under
tests/fixtures/): released completions that run on into an invented next example (ANLI), a
reasoning-model teacher (R1-style thinking on GSM8K rows), HF save_to_disk folders, and rows
whose gold answer cannot be read."""

import json
import logging

import pytest

from llmdistill.answers.checking import check_trace
from llmdistill.config.file import load_config
from llmdistill.data import load_problems, load_split
from llmdistill.errors import UserError
from llmdistill.prompts import answer_stops, load_prompt
from llmdistill.records import Trace
from tests.conftest import ROOT

FIXTURES = ROOT / "tests" / "fixtures"


def _jsonl(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line.strip()]


def _check(cfg, problem, completion: str, reasoning: str | None = None):
    trace = Trace(**problem.model_dump(), prompt="p", completion=completion, reasoning=reasoning)
    return check_trace(trace, answer_stops(load_prompt(ROOT / cfg.data.prompt), cfg.data), cfg.data)


def test_anli_completions_that_run_on_are_read_as_their_first_answer():
    cfg = load_config(ROOT / "configs" / "anli.yaml")
    problems = {p.id: p for p in load_problems(cfg.data, "train")}
    rows = _jsonl("anli_r1_completions.jsonl")
    assert len(rows) >= 10 and set(problems) == {r["id"] for r in rows}
    checked = [(r, _check(cfg, problems[r["id"]], r["completion"])) for r in rows]
    assert [(r["id"], c.verdict) for r, c in checked] == [(r["id"], r["expected"]) for r, _ in checked]
    cut = [c for r, c in checked if "\nPremise:" in r["completion"] or "\nQuestion:" in r["completion"]]
    assert len(cut) >= 8 and all(c.cut and "chars cut" in c.cut for c in cut)  # every cut is recorded on the trace
    a9 = next(c for r, c in checked if r["id"] == "a9")  # a model correcting itself inside one answer: the last statement
    assert a9.pred == "neutral" and "Hmm, actually" in a9.rationale


def test_a_reasoning_teachers_thinking_is_the_rationale_and_an_unclosed_one_is_truncated():
    cfg = load_config(ROOT / "configs" / "reasoning_teacher.yaml")
    problems = load_problems(cfg.data, "train")
    rows = _jsonl("gsm8k_r1_completions.jsonl")
    assert len(rows) >= 10
    for r in rows:
        c = _check(cfg, problems[r["row"]], r["completion"], r["reasoning"])
        assert (c.verdict, c.truncated) == (r["expected"], r["truncated"]), (r, c.reason)
        assert c.thinking, r  # inline <think>, a lone </think>, or the server's reasoning_content
        assert "<think>" not in (c.rationale or "") and "</think>" not in (c.rationale or "")
    from llmdistill.config import Config
    from llmdistill.stages.filter.rules import truncated

    unclosed = _check(cfg, problems[3], rows[3]["completion"])
    assert truncated(
        [unclosed], Config.model_validate({"output_dir": "x", "data": {"path": "x"}, "teacher": {"model_name_or_path": "m"}})
    ) == ["the thinking never closed (<think> without </think>)"]


@pytest.mark.parametrize("keep", ["keep", "drop"])
def test_the_student_keeps_or_drops_the_thinking(keep, tiny_model):
    from llmdistill.backends.transformers import load_tokenizer
    from llmdistill.stages.train.examples import build_examples

    cfg = load_config(ROOT / "configs" / "reasoning_teacher.yaml", [f"train.thinking={keep}", f"student.model_name_or_path={tiny_model}"])
    problem = load_problems(cfg.data, "train")[0]
    trace = _check(cfg, problem, "<think>\nApril 48, May 24.\n</think>\n\nShe sold 72 clips. The answer is 72.")
    tok = load_tokenizer(tiny_model)
    [cot] = build_examples(cfg, [trace], tok)
    cfg.train.mode = "step_by_step"
    label, rationale = build_examples(cfg, [trace], tok)
    if keep == "keep":
        assert cot.completion == "<think>\nApril 48, May 24.\n</think>\n\nShe sold 72 clips. The answer is 72."
        assert rationale.completion == "April 48, May 24.\n\nShe sold 72 clips."
    else:
        assert cot.completion == "She sold 72 clips. The answer is 72." and rationale.completion == "She sold 72 clips."
    assert label.completion == "The answer is 72."


def test_hf_save_to_disk_folders_load(tmp_path):
    import datasets

    from llmdistill.config import DataConfig

    rows = [{"id": f"q{i}", "question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(5)]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:3]), "test": datasets.Dataset.from_list(rows[3:])}).save_to_disk(
        tmp_path / "dd"
    )
    cfg = DataConfig(path=str(tmp_path / "dd"))
    assert [p.id for p in load_problems(cfg, "train")] == ["q0", "q1", "q2"] and [p.answer for p in load_problems(cfg, "test")] == [
        "4",
        "5",
    ]
    with pytest.raises(UserError, match="has no split 'validation' \\(splits: train, test\\)"):
        load_problems(cfg, "validation")
    datasets.Dataset.from_list(rows).save_to_disk(tmp_path / "one")  # a single Dataset serves every split, like a single file
    assert len(load_problems(DataConfig(path=str(tmp_path / "one")), "test")) == 5


def test_unreadable_gold_answers_are_counted_and_logged_once(tmp_path, caplog):
    from llmdistill.config import DataConfig

    rows = [{"question": f"q{i}", "answer": a} for i, a in enumerate(["3", "N/A", "( 2.0 + 1.0 )", "", "unknown", "7"])]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = DataConfig(path=str(tmp_path))
    with caplog.at_level(logging.WARNING):
        split = load_split(cfg, "train")
        load_split(cfg, "train")
    assert [p.question for p in split.problems] == ["q0", "q2", "q3", "q5"]  # q3 has no gold: unlabeled, kept
    assert split.notes == {"rows": 6, "problems": 4, "unreadable_gold": 2, "duplicate_choices": 0}
    warnings = [r.message for r in caplog.records if "cannot be read" in r.message]
    assert len(warnings) == 1 and "row 1 (train-1)" in warnings[0] and "'N/A'" in warnings[0]


def test_every_shape_config_loads():
    for name in ("anli", "reasoning_teacher", "svamp_palm", "quickstart"):
        load_config(ROOT / "configs" / f"{name}.yaml")
