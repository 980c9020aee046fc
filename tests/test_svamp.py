"""The SVAMP data (gold equations + PaLM-540B completions) loads and checks by configuration."""

import json

from llmdistill.answers.checking import check_answer
from llmdistill.answers.reading import parse_completion
from llmdistill.config import DataConfig
from llmdistill.data import load_problems
from tests.conftest import SVAMP


def test_palm_test_completions_score_about_77_percent():
    cfg = DataConfig(path=str(SVAMP), train_split="svamp_train", test_split="svamp_test", question_field="input", answer_field="label")
    problems = load_problems(cfg, "svamp_test")
    completions = json.loads((SVAMP / "palm" / "test_CoT_0.json").read_text())
    assert len(problems) == len(completions) == 200
    verdicts = [check_answer(parse_completion(c, ["\n\nQ:"]).answer, p, cfg)[0] for p, c in zip(problems, completions)]
    accuracy = verdicts.count("correct") / len(verdicts)
    assert 0.74 <= accuracy <= 0.80, accuracy
    assert verdicts.count("unparseable") < 10
