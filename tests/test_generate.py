import pytest

from llmdistill.config import load_config
from llmdistill.generate import generate
from llmdistill.jsonl import read_rows
from llmdistill.records import Trace

from tests.conftest import correct_script


def test_traces_carry_provenance(make_config, scripted):
    scripted.SCRIPT = correct_script()
    cfg = load_config(make_config(generate={"n": 2, "temperature": 0.7, "seed": 3}))
    stats = generate(cfg)
    rows = read_rows(cfg.stage_dir("generate") / "traces.jsonl", Trace)
    assert stats["traces"] == 12 and sorted({r.sample for r in rows}) == [0, 1]
    r = rows[0]
    assert r.teacher == cfg.teacher.model_name_or_path and r.backend == "scripted" and len(r.template_hash) == 12
    assert r.sampling["temperature"] == 0.7 and r.sampling["n"] == 2 and r.created_at > 0
    assert r.prompt.endswith("<|im_start|>assistant\n") and r.answer == "2"


def test_crash_then_rerun_generates_only_the_missing_traces(make_config, scripted):
    scripted.SCRIPT = correct_script()
    cfg = load_config(make_config(teacher={"batch_size": 2}))
    scripted.FAIL_AFTER = 1  # dies on the second batch
    with pytest.raises(KeyboardInterrupt):
        generate(cfg)
    partial = read_rows(cfg.stage_dir("generate") / "traces.jsonl", Trace)
    assert [t.id for t in partial] == ["tr0", "tr1"]
    assert not (cfg.stage_dir("generate") / "stats.json").exists()
    scripted.FAIL_AFTER, scripted.calls = None, 0
    generate(cfg)
    rows = read_rows(cfg.stage_dir("generate") / "traces.jsonl", Trace)
    assert scripted.calls == 2  # 4 remaining problems in batches of 2
    assert sorted(t.key for t in rows) == [(f"tr{i}", 0) for i in range(6)]


def test_changed_config_starts_afresh(make_config, scripted):
    scripted.SCRIPT = correct_script()
    path = make_config()
    generate(load_config(path))
    generate(load_config(path, ["generate.max_new_tokens=9"]))
    assert len(read_rows(load_config(path).stage_dir("generate") / "traces.jsonl", Trace)) == 6


def test_transformers_backend_generates_n_samples(tiny_model):
    from llmdistill.backends import SamplingParams
    from llmdistill.backends.hf import TransformersBackend

    backend = TransformersBackend(tiny_model, batch_size=2)
    out = backend.generate(["Q: a?", "Q: bb?", "Q: ccc?"], SamplingParams(n=2, temperature=1.0, max_new_tokens=5, seed=1))
    assert [len(o) for o in out] == [2, 2, 2]
    for completions in out:
        for c in completions:
            assert 1 <= c.completion_tokens <= 5 and c.prompt_tokens > 0 and c.finish_reason in ("stop", "length")
            assert c.finish_reason == "stop" or c.completion_tokens == 5
    again = backend.generate(["Q: a?", "Q: bb?", "Q: ccc?"], SamplingParams(n=2, temperature=1.0, max_new_tokens=5, seed=1))
    assert [[c.text for c in o] for o in out] == [[c.text for c in o] for o in again]
    greedy = backend.generate(["Q: a?"], SamplingParams(max_new_tokens=4))
    assert len(greedy[0]) == 1
