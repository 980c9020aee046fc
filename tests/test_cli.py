"""The CLI end to end: errors a user can cause, a full run, and skipping completed stages."""

import json

from typer.testing import CliRunner

from llmdistill.cli import app
from tests.conftest import correct_script, correct_test_script

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for f in fragments:
        assert f in lines[0], lines[0]


def test_help_for_every_command():
    for cmd in ("generate", "filter", "train", "evaluate", "run"):
        result = invoke(cmd, "--help")
        assert result.exit_code == 0 and "--set" in result.output and "Usage" in result.output


def test_misspelt_key(make_config, scripted):
    one_line_error(invoke("generate", make_config(), "--set", "generate.max_new_token=4"), "generate.max_new_token", "max_new_tokens")


def test_missing_config_and_data(make_config, scripted, tmp_path):
    one_line_error(invoke("run", tmp_path / "nope.yaml"), "config file not found")
    one_line_error(invoke("generate", make_config(data={"path": str(tmp_path / "missing.jsonl")})), "missing.jsonl", "not found")


def test_malformed_yaml(tmp_path):
    (tmp_path / "c.yaml").write_text("output_dir: [x\n")
    one_line_error(invoke("run", tmp_path / "c.yaml"), "malformed YAML")


def test_malformed_traces_line_leaves_no_trusted_output(make_config, scripted):
    scripted.SCRIPT = correct_script()
    cfg = make_config()
    assert invoke("generate", cfg).exit_code == 0
    traces = cfg.parent / "run" / "generate" / "traces.jsonl"
    lines = traces.read_text().splitlines()
    lines[2] = lines[2][:40]
    traces.write_text("\n".join(lines) + "\n")
    one_line_error(invoke("filter", cfg), "traces.jsonl:3", "malformed JSON")
    assert not (cfg.parent / "run" / "filter" / "stats.json").exists()
    one_line_error(invoke("train", cfg), "no complete 'filter' output", "llmdistill filter")


def test_run_end_to_end_then_skips_everything(make_config, scripted):
    scripted.SCRIPT = correct_script() | correct_test_script()
    cfg = make_config()
    result = invoke("run", cfg)
    assert result.exit_code == 0, result.output
    run = cfg.parent / "run"
    for path in (
        "generate/traces.jsonl",
        "filter/kept.jsonl",
        "filter/rejected.jsonl",
        "train/model/config.json",
        "train/init/config.json",
        "evaluate/results.jsonl",
        "evaluate/report.md",
        "evaluate/report.json",
    ):
        assert (run / path).is_file(), path
    for stage in ("generate", "filter", "train", "evaluate"):
        assert (run / stage / "config.yaml").is_file() and json.loads((run / stage / "stats.json").read_text())["config_hash"]
    report = json.loads((run / "evaluate" / "report.json").read_text())
    assert set(report["models"]) == {"teacher", "student_init", "student"}
    assert report["models"]["teacher"]["accuracy"] == 1.0 and report["models"]["student"]["n"] == 4
    md = (run / "evaluate" / "report.md").read_text()
    assert "student (after training)" in md and "accuracy [95% CI]" in md and "McNemar" in md and "![accuracy" in md
    assert (run / "evaluate" / "accuracy.png").stat().st_size > 1000
    assert report["gap_closed"] is not None or report["models"]["teacher"]["accuracy"] == report["models"]["student_init"]["accuracy"]
    assert "accuracy 100.0% [100.0, 100.0]" in result.output
    calls = scripted.calls
    again = invoke("run", cfg)
    assert again.exit_code == 0 and again.output.count(": skipped") == 4 and scripted.calls == calls


def test_run_after_generate_does_not_regenerate(make_config, scripted):
    scripted.SCRIPT = correct_script()
    cfg = make_config(evaluate={"models": ["teacher"]}, train={"max_steps": 1})
    assert invoke("generate", cfg).exit_code == 0
    traces = cfg.parent / "run" / "generate" / "traces.jsonl"
    before, calls = traces.read_bytes(), scripted.calls
    result = invoke("run", cfg)
    assert result.exit_code == 0, result.output
    assert "generate: skipped" in result.output and "filter: ran" in result.output
    assert scripted.calls == calls + 1  # only evaluate asked the teacher
    assert traces.read_bytes() == before


def test_changed_content_is_refused_then_overwrite_moves_the_old_outputs_aside(make_config, scripted):
    scripted.SCRIPT = correct_script()
    cfg = make_config(evaluate={"models": ["teacher"]}, train={"max_steps": 1})
    assert invoke("run", cfg).exit_code == 0
    run = cfg.parent / "run"
    model_before = (run / "train" / "model" / "model.safetensors").read_bytes()
    one_line_error(
        invoke("run", cfg, "--set", "train.learning_rate=0.001"), "train.learning_rate: 5e-05 -> 0.001", "--overwrite", "output_dir"
    )
    assert (run / "train" / "model" / "model.safetensors").read_bytes() == model_before  # nothing touched
    result = invoke("run", cfg, "--set", "train.learning_rate=0.001", "--overwrite")
    assert result.exit_code == 0, result.output
    assert "generate: skipped" in result.output and "filter: skipped" in result.output
    assert "train: ran" in result.output and "evaluate: skipped" in result.output  # the teacher's evaluation does not depend on training
    aside = sorted(run.glob("train.replaced-*"))
    assert len(aside) == 1 and (aside[0] / "model" / "model.safetensors").read_bytes() == model_before


def test_operational_changes_keep_every_stage_complete(make_config, scripted):
    scripted.SCRIPT = correct_script()
    cfg = make_config(evaluate={"models": ["teacher"]}, train={"max_steps": 1})
    assert invoke("run", cfg).exit_code == 0
    result = invoke("run", cfg, "--set", "train.logging_steps=3", "--set", "teacher.batch_size=1", "--set", "evaluate.batch_size=2")
    assert result.exit_code == 0 and result.output.count(": skipped") == 4, result.output


def test_an_output_dir_that_is_a_file_is_one_line(make_config, scripted, tmp_path):
    scripted.SCRIPT = correct_script()
    (tmp_path / "afile").write_text("not a folder")
    for out in (tmp_path / "afile", tmp_path / "afile" / "run"):
        one_line_error(invoke("generate", make_config(output_dir=str(out))), f"{tmp_path / 'afile'}: is a file, where a folder is needed")
    assert (tmp_path / "afile").read_text() == "not a folder"


def test_an_empty_data_file_is_refused(make_config, scripted, tmp_path):
    cfg = make_config()
    (tmp_path / "data" / "train.jsonl").write_text("")
    one_line_error(invoke("generate", cfg), "(train)", "no rows")


def test_retraining_to_the_same_weights_keeps_evaluate_complete(make_config, scripted):
    """train's run id is a digest of the saved weights: a rerun that ends the same strands nothing downstream."""
    from llmdistill.config.file import load_config
    from llmdistill.outputs import is_complete
    from llmdistill.stages.train import train

    scripted.SCRIPT = correct_script() | correct_test_script()
    path = make_config(train={"max_steps": 1})
    assert invoke("run", path).exit_code == 0
    cfg = load_config(path)
    train(cfg)  # deterministic on CPU: the same weights again
    assert is_complete(cfg, "evaluate")


def test_a_first_typo_does_not_block_the_fix(make_config, scripted, tmp_path):
    """An own CSV whose question column is `q`: the typo fails in one line, leaving only a saved
    config in generate/; the corrected rerun reuses the folder instead of refusing it."""
    scripted.SCRIPT = correct_script()
    cfg = make_config()
    rows = [json.loads(line) for line in (tmp_path / "data" / "train.jsonl").read_text().splitlines()]
    (tmp_path / "data" / "train.jsonl").unlink()
    (tmp_path / "data" / "train.csv").write_text("id,q,answer\n" + "".join(f"{r['id']},{r['question']},{r['answer']}\n" for r in rows))
    one_line_error(invoke("generate", cfg), "question")
    assert [p.name for p in (cfg.parent / "run" / "generate").iterdir()] == ["config.yaml"]
    result = invoke("generate", cfg, "--set", "data.question_field=q")
    assert result.exit_code == 0, result.output
    assert len((cfg.parent / "run" / "generate" / "traces.jsonl").read_text().splitlines()) == 6
    assert not list((cfg.parent / "run").glob("generate.replaced-*"))
    # a folder with outputs is still refused when the content changes
    one_line_error(invoke("generate", cfg, "--set", "data.question_field=q", "--set", "generate.max_new_tokens=9"), "made otherwise")
