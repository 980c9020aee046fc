"""The evaluate stage: sampled answers (maj@n, pass@k), rationale inspection, engines and prompts per model."""

import json

import pytest

from llmdistill.config.file import load_config
from llmdistill.outputs import stage_dir
from llmdistill.records import EvalResult
from llmdistill.stages.train import train
from tests.conftest import run_to_filter


def test_samples_give_maj_at_n_and_pass_at_k(make_config, scripted):
    from llmdistill.stages.evaluate.run import evaluate

    scripted.SCRIPT = {
        f"Mia has {i + 10} pens and gets 1 more. How many pens does Mia have?": [
            f"The answer is {i + 11}.",
            "The answer is 0.",
            f"So {i + 11}. The answer is {i + 11}.",
        ]
        for i in range(4)
    }
    cfg = load_config(make_config(evaluate={"models": ["teacher"], "samples": 3, "pass_k": [1, 2]}))
    stats = evaluate(cfg)
    report = json.loads((stage_dir(cfg, "evaluate") / "report.json").read_text())["models"]["teacher"]
    # samples cycle through the 3 scripted answers: 2 of 3 right on every problem
    assert report["maj@3"] == 1.0 and report["pass@k"] == {"1": pytest.approx(2 / 3, abs=1e-4), "2": 1.0}
    assert stats["accuracy"]["teacher"] == 1.0
    rows = [json.loads(x) for x in (stage_dir(cfg, "evaluate") / "results.jsonl").read_text().splitlines()]
    assert sorted({r["sample"] for r in rows}) == [0, 1, 2, 3]


def test_label_students_can_be_asked_for_rationales(make_config, scripted):
    from llmdistill.stages.evaluate.run import evaluate
    from llmdistill.stages.filter.run import filter_traces
    from llmdistill.stages.generate.run import generate
    from llmdistill.stages.train import train
    from tests.conftest import correct_script

    scripted.SCRIPT = correct_script()
    cfg = load_config(make_config(train={"mode": "step_by_step"}, evaluate={"models": ["student"], "inspect_rationales": 2}))
    generate(cfg)
    filter_traces(cfg)
    train(cfg)
    evaluate(cfg)
    rows = [json.loads(x) for x in (stage_dir(cfg, "evaluate") / "rationales.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and rows[0]["model"] == "student:rationale"
    card = (stage_dir(cfg, "train") / "model" / "README.md").read_text()
    assert "greedy: student" in card


def test_maj_at_n_counts_labelled_problems_only():
    from llmdistill.stages.evaluate.run import sampled_metrics

    def row(pid, s, gold, key, verdict):
        return EvalResult(id=pid, model="m", sample=s, question="q", gold=gold, output="", pred=key, verdict=verdict, answer_key=key)

    rows = [
        row("a", 1, "1", "1", "correct"),
        row("a", 2, "1", "2", "wrong"),
        row("a", 3, "1", "1", "correct"),
        row("b", 1, None, "5", "unlabeled"),
        row("b", 2, None, "5", "unlabeled"),
        row("b", 3, None, "5", "unlabeled"),
    ]
    m = sampled_metrics(rows, [1])
    assert m["maj@3"] == 1.0 and m["pass@k"]["1"] == pytest.approx(2 / 3, abs=1e-4)


def test_step_by_step_student_is_evaluated_on_the_label_prompt(make_config, scripted):
    from llmdistill.stages.evaluate.run import evaluate

    cfg = run_to_filter(make_config, scripted, train={"mode": "step_by_step", "num_shots": 0}, evaluate={"models": ["student"]})
    train(cfg)
    evaluate(cfg)
    report = json.loads((stage_dir(cfg, "evaluate") / "report.json").read_text())
    assert report["models"]["student"]["prompt"] == "label, 0 shots"
    card = (stage_dir(cfg, "train") / "model" / "README.md").read_text()
    assert "## Evaluation" in card and "student (after training)" in card


def test_students_use_the_evaluate_engine_and_dtype(make_config, scripted, monkeypatch):
    """evaluate.backend/dtype reach the students' engine (vLLM selectable); the teacher keeps its own."""
    import llmdistill.stages.evaluate.run as ev

    built = []

    def fake(kind, **kw):
        built.append((kind, kw))
        return kind

    monkeypatch.setattr(ev, "get_backend", fake)
    cfg = load_config(
        make_config(evaluate={"backend": "vllm", "dtype": "bfloat16", "gpu_memory_utilization": 0.3, "models": ["student_init"]})
    )
    assert ev._backend(cfg, "student_init", "/some/student", None) == "vllm"
    assert built == [
        (
            "vllm",
            {"model_name_or_path": "/some/student", "dtype": "bfloat16", "max_model_len": None, "gpu_memory_utilization": 0.3, "seed": 0},
        )
    ]
    cfg = load_config(make_config(evaluate={"dtype": "float16", "device": "cpu"}))
    ev._backend(cfg, "student", "/s", None)
    assert built[-1] == ("transformers", {"model_name_or_path": "/s", "dtype": "float16", "device": "cpu", "batch_size": 4})


def test_evaluate_never_writes_into_the_train_folder_without_its_lock(make_config, scripted):
    """The untrained pruned student of an evaluation before training is built in the evaluate
    folder (the train folder is not created); the trained student's model card is updated under
    the train stage's lock, atomically, and not at all while another process holds that lock."""
    from llmdistill.outputs import StageLock
    from llmdistill.stages.evaluate.run import evaluate
    from tests.conftest import correct_test_script

    scripted.SCRIPT = correct_test_script()
    cfg = load_config(make_config(evaluate={"models": ["teacher", "student_init"]}))
    evaluate(cfg)
    assert not stage_dir(cfg, "train").exists()
    assert (stage_dir(cfg, "evaluate") / "student_init" / "model.safetensors").is_file()

    cfg = run_to_filter(make_config, scripted, evaluate={"models": ["student"]})
    train(cfg)
    card = stage_dir(cfg, "train") / "model" / "README.md"
    before = card.read_text()
    with (
        StageLock(cfg, "train"),
        pytest.raises(Exception, match="being written by another process"),
    ):  # another process writes the train folder
        evaluate(cfg, overwrite=True)
    assert card.read_text() == before
    evaluate(cfg, overwrite=True)
    assert "## Evaluation" in card.read_text() and not list(card.parent.glob("*.tmp"))
