"""Answer checking by configuration: numeric, multiple-choice and label tasks, table-driven."""

import pytest

from llmdistill.answers.checking import check_answer, gold_answer, make_problem
from llmdistill.config import DataConfig
from llmdistill.config.file import load_config
from llmdistill.data import load_problems
from llmdistill.errors import UserError
from llmdistill.records import Problem
from tests.conftest import ROOT

NUM = DataConfig(path="x")
CHOICE = DataConfig(path="x", answer_type="choice", choices_field="choices")
LABEL = DataConfig(path="x", answer_type="label", labels=["entailment", "neutral", "contradiction"])
CHOICES = ["cupboard", "table", "restaurant", "flea market", "dishwasher"]


def verdict(pred, gold, cfg=NUM, choices=None):
    return check_answer(pred, Problem(id="p", question="q", answer=gold, choices=choices), cfg)[0]


@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("1,234", "1234", "correct"),
        ("$1,234.00", "1234", "correct"),
        ("12.5%", "12.5", "correct"),
        ("-3", "-3", "correct"),
        ("\\boxed{1234}", "1234", "correct"),
        ("(10 * 45)", "( 10.0 * 45.0 )", "correct"),
        ("450.00001", "450", "correct"),
        ("451", "( 10.0 * 45.0 )", "wrong"),
        ("3", "-3", "wrong"),
        ("seven", "7", "unparseable"),
        (None, "7", "unparseable"),
        ("__import__('os').system('ls')", "7", "unparseable"),
        ("7", None, "unlabeled"),
    ],
)
def test_numeric(pred, gold, expected):
    assert verdict(pred, gold) == expected


@pytest.mark.parametrize(
    "raw, gold",
    [
        ("Natalia sold 48/2 = 24 clips.\n#### 72", "72"),
        ("#### 2,034", "2,034"),
        ("( 10.0 * 45.0 )", "( 10.0 * 45.0 )"),
        (5, "5"),
        ("", None),
    ],
)
def test_numeric_gold_forms(raw, gold):
    assert gold_answer(raw, NUM, None) == gold


def test_gold_regex():
    cfg = DataConfig(path="x", gold_regex=r"Answer: (\S+)")
    assert gold_answer("work... Answer: 42", cfg, None) == "42"
    with pytest.raises(UserError, match="does not match"):
        gold_answer("no marker", cfg, None)


@pytest.mark.parametrize(
    "pred, expected",
    [
        ("(a)", "correct"),
        ("a", "correct"),
        ("A.", "correct"),
        ("(a) cupboard", "correct"),
        ("cupboard", "correct"),
        ("the cupboard", "correct"),
        ("(b) table", "wrong"),
        ("table", "wrong"),
        ("(a) table", "unparseable"),
        ("cupboard or table", "unparseable"),
        ("the sink", "unparseable"),
        ("option (f)", "unparseable"),
    ],
)
def test_multiple_choice(pred, expected):
    assert verdict(pred, "a", CHOICE, CHOICES) == expected


@pytest.mark.parametrize("raw, letter", [("A", "a"), ("e", "e"), ("(c)", "c"), ("flea market", "d"), ("Dishwasher", "e")])
def test_choice_gold_as_letter_or_text(raw, letter):
    assert gold_answer(raw, CHOICE, CHOICES) == letter


def test_choice_gold_not_a_choice():
    with pytest.raises(UserError, match="neither a choice letter nor one of the choices"):
        gold_answer("sink", CHOICE, CHOICES)


@pytest.mark.parametrize(
    "pred, gold, expected",
    [
        ("entailment", "entailment", "correct"),
        ("Entailment.", "entailment", "correct"),
        ("it is a contradiction", "contradiction", "correct"),
        ("neutral", "entailment", "wrong"),
        ("not entailment", "entailment", "unparseable"),
        ("maybe", "neutral", "unparseable"),
        ("entailment or neutral", "neutral", "unparseable"),
    ],
)
def test_labels(pred, gold, expected):
    assert verdict(pred, gold, LABEL) == expected


@pytest.mark.parametrize("raw, label", [(0, "entailment"), ("2", "contradiction"), ("Neutral", "neutral")])
def test_label_gold_by_index_or_name(raw, label):
    assert gold_answer(raw, LABEL, None) == label
    with pytest.raises(UserError, match="outside data.labels"):
        gold_answer(3, LABEL, None)


def test_choices_render_into_the_question():
    p = make_problem({"question": "Where?", "choices": {"label": list("ABCDE"), "text": CHOICES}, "answer": "A"}, CHOICE, "p", "train")
    assert p.question.endswith("Answer choices: (a) cupboard (b) table (c) restaurant (d) flea market (e) dishwasher")
    assert p.answer == "a" and p.choices == CHOICES


def test_task_config_needs_its_fields():
    with pytest.raises(ValueError, match="needs data.choices_field"):
        DataConfig(path="x", answer_type="choice")
    with pytest.raises(ValueError, match="needs data.labels"):
        DataConfig(path="x", answer_type="label")
    with pytest.raises(ValueError, match="capturing group"):
        DataConfig(path="x", answer_regex="####")


# The config-only examples: every fixture problem loads, and a right/wrong/unreadable answer is judged so.
EXAMPLES = {
    "gsm8k_style": [("The answer is 72.", "correct"), ("The answer is 73.", "wrong"), ("I am not sure.", "unparseable")],
    "csqa_style": [
        ("Plates go in a cupboard. The answer is (a) cupboard.", "correct"),
        ("The answer is (b).", "wrong"),
        ("The answer is a sink.", "unparseable"),
    ],
    "anli_style": [
        ("A guitar on stage is music. The answer is entailment.", "correct"),
        ("The answer is neutral.", "wrong"),
        ("The answer is yes.", "unparseable"),
    ],
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_config_only_examples(name, monkeypatch):
    from llmdistill.answers.reading import parse_completion
    from llmdistill.prompts import load_prompt

    monkeypatch.chdir(ROOT)
    cfg = load_config(f"configs/{name}.yaml")
    problems = load_problems(cfg.data, cfg.data.train_split)
    assert len(problems) >= 3 and all(p.answer for p in problems)
    stop = load_prompt(cfg.data.prompt).stop
    for text, expected in EXAMPLES[name]:
        assert check_answer(parse_completion(text, stop).answer, problems[0], cfg.data)[0] == expected, text
