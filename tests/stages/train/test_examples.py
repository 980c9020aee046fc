"""Training examples per objective, gold labels, the preflight and data subsets."""

import pytest

from llmdistill.config.file import load_config
from llmdistill.errors import UserError
from llmdistill.jsonl import read_rows
from llmdistill.outputs import stage_dir
from llmdistill.outputs.identity import content_hash
from llmdistill.stages.train import train
from tests.conftest import run_to_filter


def test_gold_labels_are_written_as_numbers(make_config, scripted, tmp_path):
    from llmdistill.records import Problem
    from llmdistill.stages.train.examples import gold_output

    gold = {"mode": "label", "label_source": "gold"}
    cfg = load_config(make_config(train=gold))
    assert gold_output(Problem(id="x", question="q", answer="( 10.0 * 45.0 )"), cfg) == "450"
    assert gold_output(Problem(id="x", question="q", answer="2.50"), cfg) == "2.5"
    written = load_config(make_config(train=gold), ["train.gold_label=as_written"])
    assert gold_output(Problem(id="x", question="q", answer="( 10.0 - ( 6.0 + 3.5 ) )"), written) == "(10 - (6 + 3.5))"
    assert gold_output(Problem(id="x", question="q", answer="2.50"), written) == "2.50"
    assert content_hash(cfg, "train") != content_hash(written, "train")


def test_preflight_refuses_a_config_that_truncates_answers(make_config, scripted):
    cfg = run_to_filter(make_config, scripted, train={"max_length": 40})
    with pytest.raises(UserError, match=r"preflight: 6 of 6 training examples are longer than train.max_length=40"):
        train(cfg)
    assert not (stage_dir(cfg, "train") / "model").exists()


def test_preflight_drop_counts_what_it_dropped(make_config, scripted, tmp_path):
    from llmdistill.backends.transformers import load_tokenizer
    from llmdistill.records import FilteredTrace
    from llmdistill.stages.train.examples import build_examples, preflight

    cfg = run_to_filter(make_config, scripted, train={"on_overlength": "drop"})
    traces = read_rows(stage_dir(cfg, "filter") / "kept.jsonl", FilteredTrace)
    tok = load_tokenizer(cfg.teacher.model_name_or_path)
    examples = list(build_examples(cfg, traces, tok))
    _, report = preflight(cfg, examples, tok)
    lo, hi = report["total_tokens"]["min"], report["total_tokens"]["max"]
    assert lo < hi and report["over_max_length"] == 0
    cfg.train.max_length = lo  # the shortest examples fit, the others would lose their answers
    kept, report = preflight(cfg, examples, tok)
    assert 0 < len(kept) < len(examples)
    assert report["over_max_length"] == len(examples) - len(kept) == len(report["dropped_over_max_length"])
    assert report["prompt_tokens"]["max"] > 0 and report["train_tokens_per_epoch"] > 0


def test_data_fraction_takes_nested_subsets_of_problems(make_config, scripted):
    from llmdistill.backends.transformers import load_tokenizer
    from llmdistill.data import load_problems
    from llmdistill.records import FilteredTrace
    from llmdistill.stages.train.examples import build_examples, in_subset

    ids = [f"p{i}" for i in range(2000)]
    quarter, half = {i for i in ids if in_subset(i, 0.25)}, {i for i in ids if in_subset(i, 0.5)}
    assert quarter < half and abs(len(quarter) - 500) < 60 and abs(len(half) - 1000) < 80
    cfg = run_to_filter(make_config, scripted, train={"mode": "label", "label_source": "gold", "data_fraction": 0.5})
    tok = load_tokenizer(cfg.teacher.model_name_or_path)
    traces = read_rows(stage_dir(cfg, "filter") / "kept.jsonl", FilteredTrace)
    examples = list(build_examples(cfg, traces, tok, load_problems(cfg.data, "train")))
    assert {e.id for e in examples} == {p.id for p in load_problems(cfg.data, "train") if in_subset(p.id, 0.5)}


def test_validation_problems_are_held_out_of_the_whole_split_before_the_fraction(make_config, scripted):
    """Every data_fraction picks its checkpoint on the same validation problems (issue 30: at 25%
    the checkpoint was picked on a quarter of them), and trains on its subset of the rest."""
    from llmdistill.backends.transformers import load_tokenizer
    from llmdistill.data import load_problems
    from llmdistill.records import FilteredTrace
    from llmdistill.stages.train.examples import build_examples, in_subset, in_validation

    base = run_to_filter(make_config, scripted, train={"mode": "label", "label_source": "gold", "validation_fraction": 0.5})
    tok = load_tokenizer(base.teacher.model_name_or_path)
    traces = read_rows(stage_dir(base, "filter") / "kept.jsonl", FilteredTrace)
    problems = load_problems(base.data, "train")
    held = {p.id for p in problems if in_validation(p.id, 0.5, 0)}
    assert held and len(held) < len(problems)
    for fraction in (0.3, 1.0):
        cfg = base.model_copy(update={"train": base.train.model_copy(update={"data_fraction": fraction})})
        examples = list(build_examples(cfg, traces, tok, problems))
        assert {e.id for e in examples if e.split == "validation"} == held
        assert {e.id for e in examples if e.split == "train"} == {p.id for p in problems if p.id not in held and in_subset(p.id, fraction)}


@pytest.mark.parametrize("layout", ["two_tasks", "answer_first"])
def test_gold_step_by_step_labels_every_problem_and_reasons_where_a_trace_was_kept(make_config, scripted, layout, tmp_path):
    """labels_for all_problems: the label task sees every gold answer (as label training does); the
    rationale task only the kept traces; a problem without a trace gives its label alone. The
    traces looked up in the file by offset give the same examples as traces in memory."""
    from llmdistill.backends.transformers import load_tokenizer
    from llmdistill.data import load_problems
    from llmdistill.jsonl import write_rows
    from llmdistill.records import FilteredTrace
    from llmdistill.stages.train.examples import KeptTraces, build_examples

    settings = {"mode": "step_by_step", "label_source": "gold", "labels_for": "all_problems", "layout": layout}
    cfg = run_to_filter(make_config, scripted, train=settings)
    tok = load_tokenizer(cfg.teacher.model_name_or_path)
    traces = read_rows(stage_dir(cfg, "filter") / "kept.jsonl", FilteredTrace)[1:]  # one problem loses its trace
    problems = load_problems(cfg.data, "train")
    examples = list(build_examples(cfg, traces, tok, problems))
    write_rows(tmp_path / "kept.jsonl", traces[::-1])  # the problems in another order in the file: the split decides
    assert list(build_examples(cfg, KeptTraces(tmp_path / "kept.jsonl"), tok, iter(problems))) == examples
    untraced = {p.id for p in problems} - {tr.id for tr in traces}
    assert untraced
    if layout == "two_tasks":
        assert sorted(e.id for e in examples if e.task == "label") == sorted(p.id for p in problems)
        assert sorted(e.id for e in examples if e.task == "rationale") == sorted(tr.id for tr in traces)
        assert all(e.completion.strip() for e in examples)
    else:
        assert {e.id for e in examples} == {p.id for p in problems} and all(e.task == "answer_rationale" for e in examples)
        alone = [e for e in examples if e.id in untraced]
        assert alone and all("\n\n" not in e.completion.strip() for e in alone)
    with pytest.raises(UserError, match="train.labels_for is not read"):
        load_config(make_config(train={**settings, "label_source": "teacher", "labels_for": "traces"}))
