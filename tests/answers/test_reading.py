import pytest

from llmdistill.answers.arith import safe_eval
from llmdistill.answers.reading import parse_completion, to_number
from tests.conftest import ROOT

STOP = ["\n\nQ:", "\nQ:"]


@pytest.mark.parametrize(
    "text, rationale, answer",
    [
        ("Sam has 3 + 4 = 7. The answer is 7.", "Sam has 3 + 4 = 7.", "7"),
        ("x. So the answer is (10 * 45).\n\nQ: invented next question? A: The answer is 3.", "x.", "(10 * 45)"),
        ("First 2. Then 3. The answer is 1,234.", "First 2. Then 3.", "1,234"),
        ("The answer is $1,234.00.", "", "$1,234.00"),
        ("Therefore, the answer is 12.5%.", "", "12.5%"),
        ("It is 4. Wait, the answer is 5. The answer is 6.", "It is 4. Wait, the answer is 5.", "6"),
        ("so we get \\boxed{42}", "so we get \\boxed{42}", "42"),
        ("I have no idea", "I have no idea", None),
    ],
)
def test_parse_completion(text, rationale, answer):
    parsed = parse_completion(text, STOP)
    assert (parsed.rationale, parsed.answer) == (rationale, answer)


@pytest.mark.parametrize(
    "text, value",
    [
        ("1,234", 1234),
        ("$1,234.00", 1234),
        ("12.5%", 12.5),
        ("-3", -3),
        ("(10 * 45)", 450),
        ("\\boxed{1234}", 1234),
        ("( 10.0 * 45.0 )", 450),
        ("42 apples", 42),
        ("7.", 7),
        ("2^3", 8),
        ("3 ÷ 2", 1.5),
    ],
)
def test_to_number(text, value):
    assert to_number(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["seven", "1 or 2", "", "__import__('os').system('echo hi')"])
def test_to_number_unreadable(text):
    assert to_number(text) is None


@pytest.mark.parametrize(
    "expr, value", [("1 + 2 * 3", 7), ("(1 + 2) * 3", 9), ("-(2 - 5)", 3), ("2 ** 3 ** 2", 512), ("10 / 4", 2.5), (".5 + 1.", 1.5)]
)
def test_safe_eval(expr, value):
    assert safe_eval(expr) == pytest.approx(value)


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os').system('rm -rf /')",
        "open('x')",
        "1 if 1 else 2",
        "[1, 2]",
        "lambda: 1",
        "2 ** 1000",
        "9 ** 9 ** 9",
        "1 / 0",
        "(1 + 2",
        "1 +",
        "a + 1",
        "1e308 * 1e308",
        "(" * 400 + "1" + ")" * 400,
    ],
)
def test_safe_eval_refuses_hostile_or_bad_input(expr):
    with pytest.raises(ValueError):
        safe_eval(expr)


def _reference(text: str):
    """The plain regex reading: the last full-regex match in the text."""
    from llmdistill.answers.reading import ANSWER_IS

    m = next(reversed(list(ANSWER_IS.finditer(text))), None)
    return None if m is None else (text[: m.start()].strip(), m.group(1).strip())


def test_fast_answer_reading_agrees_with_the_regex():
    import itertools
    import json

    from llmdistill.answers.reading import parse_completion, read_answer

    leads = ["", "so ", "So, ", "Thus ", "therefore,\n ", "hence  ", "also ", "Hence,"]
    phrases = ["the answer is", "The final answer is", "THE ANSWER IS:", "the answer is:  "]
    answers = ["7.", "1,234", "$12.50.", "(10 * 45)", "12.5%", "-3.\n", "7. Next line", "x = 4.  "]
    texts = [f"We add 3 + 4. {lead}{phrase} {ans}" for lead, phrase, ans in itertools.product(leads, phrases, answers)]
    texts += ["The answer is 5.\nThe answer is 6.", "my answer is 5.", "answer is 5"]
    # One line saying it twice: the last phrase wins (the single regex would read '3 so the answer is 4').
    assert parse_completion("So the answer is 3 so the answer is 4.", []).answer == "4"
    palm = ROOT / "data" / "svamp" / "palm" / "train_CoT_0.json"
    if palm.is_file():
        texts += [t if isinstance(t, str) else json.dumps(t) for t in json.loads(palm.read_text())][:500]
    for t in texts:
        p = read_answer(t.strip())
        ref = _reference(t.strip())
        got = None if p.answer is None or (ref is None and p.answer is not None and "boxed" in t) else (p.rationale, p.answer)
        if ref is None:
            assert p.answer is None or "\\boxed" in t, t
        else:
            assert got == ref, t


def test_connectives_are_whole_words_and_stay_out_of_the_rationale():
    from llmdistill.answers.reading import parse_completion

    p = parse_completion("Also the answer is 3.", [])
    assert (p.rationale, p.answer) == ("Also", "3")
    p = parse_completion("We add. Therefore, the answer is 5. I am sure my answer is right.", [])
    assert (p.rationale, p.answer) == ("We add.", "5")
    p = parse_completion("We add 2 and 3. So, the answer is 5.", [])
    assert (p.rationale, p.answer) == ("We add 2 and 3.", "5")


def test_an_abbreviations_period_does_not_end_the_answer():
    """'Rs. 1500' is one answer (it read 'Rs'); a sentence's period still ends it, 'no.' included."""
    from llmdistill.answers.reading import read_answer, to_number

    assert read_answer("So the price is Rs. 1500. The answer is Rs. 1500.").answer == "Rs. 1500"
    assert read_answer("The answer is approx. 3.5.").answer == "approx. 3.5"
    assert read_answer("The answer is no. So he cannot.").answer == "no"
    assert read_answer("The answer is 42. Then more text.").answer == "42"
    assert to_number("Rs. 1500") == to_number("Rs.1500") == to_number("Rs 1,500.00") == 1500.0
