"""Tasks in the row shapes users bring (fixtures under tests/fixtures/, one config each in configs/):
CommonsenseQA rows that list a choice twice, AQuA-RAT options with their letters written in,
StrategyQA's boolean gold, and MATH's LaTeX answers checked with math-verify. Every fixture row has
teacher completions with a hand-written verdict, read and checked the way the filter stage does."""

import json
import sys
import threading

import pytest

from llmdistill.answers.checking import check_answer, duplicate_choices, gold_answer, label_key, majority, make_problem
from llmdistill.answers.reading import parse_completion
from llmdistill.config import DataConfig
from llmdistill.config.file import load_config
from llmdistill.data import load_problems
from llmdistill.errors import UserError
from llmdistill.prompts import load_prompt
from llmdistill.records import Problem
from tests.conftest import ROOT

FIXTURES = ROOT / "tests" / "fixtures"
SHAPES = ["csqa", "aqua_rat", "strategyqa", "math"]


def _jsonl(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line.strip()]


def _shape(name: str):
    """The shape's config with data.path at its fixture, and its problems by id."""
    cfg = load_config(ROOT / "configs" / f"{name}.yaml", [f"data.path={FIXTURES / name}.jsonl"])
    return cfg, {p.id: p for p in load_problems(cfg.data, cfg.data.train_split)}


@pytest.mark.parametrize("name", SHAPES)
def test_every_fixture_completion_gets_its_hand_written_verdict(name):
    cfg, problems = _shape(name)
    completions = _jsonl(f"{name}_completions.jsonl")
    assert len(problems) >= 10 and len(problems) == len(_jsonl(f"{name}.jsonl")) and all(p.answer for p in problems.values())
    assert {c["id"] for c in completions} == set(problems), "every row has a completion, every completion a row"
    assert {c["expected"] for c in completions} == {"correct", "wrong", "unparseable"}
    stop = load_prompt(ROOT / cfg.data.prompt).stop
    got = []
    for c in completions:
        parsed = parse_completion(c["completion"], stop, cfg.data.answer_regex)
        verdict, reason, _ = (
            check_answer(parsed.answer, problems[c["id"]], cfg.data) if parsed.answer is not None else ("unparseable", parsed.reason, None)
        )
        got.append((c["id"], c["completion"][:70], verdict if verdict == c["expected"] else f"{verdict} ({reason})"))
    assert got == [(c["id"], c["completion"][:70], c["expected"]) for c in completions]


@pytest.mark.parametrize("name", SHAPES)
def test_the_shape_configs_load(name):
    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    assert load_prompt(ROOT / cfg.data.prompt).exemplars


# ---- CommonsenseQA: one choice text listed twice --------------------------------------------

CHOICE = DataConfig(path="x", answer_type="choice", choices_field="choices")
TWICE = ["healthy", "passing around", "cure", "wellness", "healthy"]


def test_duplicate_choices_are_one_answer_for_gold_answers_and_the_vote():
    assert duplicate_choices(TWICE) and duplicate_choices(["Night light", "oven", "night light."])
    assert not duplicate_choices(["cupboard", "table", "restaurant"])
    assert gold_answer("healthy", CHOICE, TWICE) == gold_answer("E", CHOICE, TWICE) == gold_answer("a", CHOICE, TWICE) == "a"
    problem = Problem(id="p", question="q", answer="a", choices=TWICE)
    checked = [check_answer(pred, problem, CHOICE) for pred in ("(e) healthy", "(a)", "healthy", "E", "(c) cure")]
    assert [v for v, _, _ in checked] == ["correct"] * 4 + ["wrong"]
    assert majority(k for _, _, k in checked) == ("a", 4)  # the two letters vote together


def test_a_text_matching_no_choice_is_still_refused():
    with pytest.raises(UserError, match="neither a choice letter nor one of the choices"):
        gold_answer("sick", CHOICE, TWICE)


# ---- AQuA-RAT: option letters written into the choice texts ---------------------------------

AQUA = DataConfig(path="x", answer_type="choice", choices_field="options", answer_field="correct")


@pytest.mark.parametrize(
    "options, shown",
    [
        (["A)21", "B)21.5", "C)22", "D)22.5", "E)23"], "(a) 21 (b) 21.5 (c) 22 (d) 22.5 (e) 23"),
        (["(A) 11 cm", "(B) 12 cm"], "(a) 11 cm (b) 12 cm"),
        (["a. 3", "b. 6", "c. 9"], "(a) 3 (b) 6 (c) 9"),
        (["A: Rs. 10", "B: Rs. 12"], "(a) Rs. 10 (b) Rs. 12"),
        (["A)1", "C)2", "B)3"], "(a) A)1 (b) C)2 (c) B)3"),  # not each its own letter in order: left alone
        (["A. Lincoln", "Washington"], "(a) A. Lincoln (b) Washington"),
    ],
)
def test_option_letters_are_stripped_only_when_every_option_carries_its_own(options, shown):
    p = make_problem({"question": "Q?", "options": options, "correct": "A"}, AQUA, "p", "train")
    assert p.question == f"Q?\nAnswer choices: {shown}" and p.answer == "a"


# ---- StrategyQA: boolean gold, yes/no answers ------------------------------------------------

YES_NO = DataConfig(path="x", answer_type="label", labels=["yes", "no"])


@pytest.mark.parametrize(
    "raw, label", [(True, "yes"), (False, "no"), ("true", "yes"), ("False", "no"), ("True", "yes"), ("no", "no"), (1, "no")]
)
def test_boolean_gold_is_the_yes_or_no_label(raw, label):
    assert gold_answer(raw, YES_NO, None) == label  # (an integer still indexes data.labels)


def test_boolean_gold_with_true_false_labels_and_without_a_matching_label():
    assert gold_answer(False, DataConfig(path="x", answer_type="label", labels=["True", "False"]), None) == "False"
    with pytest.raises(UserError, match="not in data.labels"):
        gold_answer(True, DataConfig(path="x", answer_type="label", labels=["entailment", "neutral"]), None)


@pytest.mark.parametrize(
    "pred, key",
    [
        ("No.", "no"),
        ("no, because a llama's gestation is 11 months", "no"),
        ("Yes, it could.", "yes"),
        ("yes, no doubt", "yes"),
        ("false", "no"),
        ("not yes", None),
        ("yes or no", None),
        ("maybe", None),
    ],
)
def test_yes_no_answers(pred, key):
    assert label_key(pred, ["yes", "no"])[0] == key


# ---- MATH: LaTeX answers through math-verify -------------------------------------------------

MATH = DataConfig(path="x", answer_type="math", answer_field="solution")


def _math(pred: str, gold: str = r"\frac{3}{4}"):
    return check_answer(pred, Problem(id="p", question="q", answer=gold), MATH)


def test_one_value_written_many_ways_is_one_answer_and_one_vote():
    checked = [_math(p) for p in (r"\boxed{\frac{3}{4}}", "0.75", "3/4", r"\dfrac34", r"$\frac{3}{4}$", r"\frac{3}{4}")]
    assert {(v, k) for v, _, k in checked} == {("correct", "3/4")}
    assert _math("0.7")[:1] == ("wrong",) and _math("0.7")[2] == "7/10"


def test_math_gold_is_the_last_boxed_answer_of_a_solution_or_the_answer_as_given():
    solution = r"First $\boxed{1}$ is wrong; so the probability is $\boxed{\frac{3}{\sqrt{16}}}$."
    assert gold_answer(solution, MATH, None) == r"\frac{3}{\sqrt{16}}"
    assert gold_answer(r"\left( 3, \frac{\pi}{2} \right)", MATH, None) == r"\left( 3, \frac{\pi}{2} \right)"
    cfg, problems = _shape("math")  # MATH-500 rows: the solution's boxed answer and the answer field agree
    given = {p.id: p.answer for p in load_problems(cfg.data.model_copy(update={"answer_field": "answer"}), "train")}
    assert all(_math(given[pid], p.answer)[0] == "correct" for pid, p in problems.items())


@pytest.mark.parametrize(
    "pred, why",
    [
        ("1" * 1001, "too long to verify"),
        ("I don't know", "a sentence"),
        ("not determined by the information given", "a sentence"),
        ("__import__('os').system('echo hi')", "a sentence"),
        ("}}{{", "not math"),
    ],
)
def test_what_cannot_be_read_is_unparseable_with_its_reason(pred, why):
    verdict, reason, key = _math(pred)
    assert (verdict, key) == ("unparseable", None) and why in reason


def test_a_check_that_runs_too_long_is_unparseable_not_wrong():
    verdict, reason, _ = _math("10^{10^{10^{10}}}", "5")
    assert verdict == "unparseable" and "within 3 s" in reason


def test_math_checks_from_another_thread_run_in_a_worker_process(monkeypatch):
    import llmdistill.answers.latex as ma

    out = []
    worker = threading.Thread(target=lambda: out.append((_math("0.750"), _math(r"\frac{5}{6}", r"\dfrac{10}{12}"), _math("0.8"))))
    worker.start()
    worker.join()
    assert [(v, k) for v, _, k in out[0]] == [("correct", "3/4"), ("correct", "5/6"), ("wrong", "4/5")]
    monkeypatch.setattr(ma, "TIME_LIMIT_S", 0)  # the caller waits 2 s; the worker's own limit is 3 s
    monkeypatch.setattr(ma, "WORKER_START_S", 0)
    worker = threading.Thread(target=lambda: out.append(_math("10^{10^{10^{12}}}", "7")))
    worker.start()
    worker.join()
    assert out[1][0] == "unparseable" and "time limit (worker process)" in out[1][1]


def test_without_math_verify_a_math_config_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "math_verify", None)  # import math_verify -> ImportError
    cfg = load_config(ROOT / "configs" / "math.yaml")
    with pytest.raises(UserError, match=r"pip install 'llmdistill\[math\]'") as e:
        load_problems(cfg.data, "train")
    assert "\n" not in str(e.value)


def test_a_math_config_refuses_choices_and_labels():
    with pytest.raises(ValueError, match="answer_type 'math' reads no"):
        DataConfig(path="x", answer_type="math", labels=["yes", "no"])
