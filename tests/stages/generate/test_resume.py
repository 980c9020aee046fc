"""Killing `llmdistill generate` with SIGKILL at any moment and rerunning it gives the same traces."""

import pytest
import yaml

from llmdistill.jsonl import read_rows
from llmdistill.records import Trace
from tests.conftest import ROOT, write_jsonl
from tests.processes import kill_at_lines, lines, start_cli


def resume_config(tmp_path, tiny_model, out: str):
    problems = [
        {"id": f"p{i:02d}", "question": f"Tom has {i} pens and gets 3 more. How many pens?", "answer": str(i + 3)} for i in range(30)
    ]
    write_jsonl(tmp_path / "data" / "train.jsonl", problems)
    cfg = {
        "output_dir": str(tmp_path / out),
        "data": {"path": str(tmp_path / "data"), "prompt": str(ROOT / "prompts" / "arithmetic_cot.yaml"), "num_shots": 1},
        "teacher": {"model_name_or_path": tiny_model, "backend": "transformers", "batch_size": 2},
        "generate": {"n": 2, "temperature": 1.0, "max_new_tokens": 24, "seed": 7},
    }
    path = tmp_path / f"{out}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def generate_process(path, env: dict | None = None):
    return start_cli("generate", path, env=env, quiet=True)


def traces_of(path):
    return sorted((t.id, t.sample, t.completion) for t in read_rows(path, Trace))


@pytest.mark.slow
def test_sigkill_then_rerun_equals_an_uninterrupted_run(tmp_path, tiny_model):
    killed = resume_config(tmp_path, tiny_model, "killed")
    traces = tmp_path / "killed" / "generate" / "traces.jsonl"
    kill_at_lines(generate_process(killed), traces, 10)
    partial = lines(traces)
    assert 10 <= partial < 60 and not (tmp_path / "killed" / "generate" / "stats.json").exists()

    assert generate_process(killed).wait(timeout=300) == 0
    clean = resume_config(tmp_path, tiny_model, "clean")
    assert generate_process(clean).wait(timeout=300) == 0

    resumed = traces_of(traces)
    assert len(resumed) == 60 and len({(i, s) for i, s, _ in resumed}) == 60  # no duplicate, none missing
    assert resumed == traces_of(tmp_path / "clean" / "generate" / "traces.jsonl")
