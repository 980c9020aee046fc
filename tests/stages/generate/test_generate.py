import pytest

from llmdistill.config.file import load_config
from llmdistill.jsonl import read_rows
from llmdistill.outputs import stage_dir
from llmdistill.records import Trace
from llmdistill.stages.generate.run import generate
from tests.conftest import correct_script


def test_traces_carry_provenance(make_config, scripted):
    scripted.SCRIPT = correct_script()
    cfg = load_config(make_config(generate={"n": 2, "temperature": 0.7, "seed": 3}))
    stats = generate(cfg)
    rows = read_rows(stage_dir(cfg, "generate") / "traces.jsonl", Trace)
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
    partial = read_rows(stage_dir(cfg, "generate") / "traces.jsonl", Trace)
    assert [t.id for t in partial] == ["tr0", "tr1"]
    assert not (stage_dir(cfg, "generate") / "stats.json").exists()
    scripted.FAIL_AFTER, scripted.calls = None, 0
    generate(cfg)
    rows = read_rows(stage_dir(cfg, "generate") / "traces.jsonl", Trace)
    assert scripted.calls == 2  # 4 remaining problems in batches of 2
    assert sorted(t.key for t in rows) == [(f"tr{i}", 0) for i in range(6)]


def test_changed_content_is_refused_and_overwrite_moves_the_traces_aside(make_config, scripted):
    from llmdistill.errors import UserError

    scripted.SCRIPT = correct_script()
    path = make_config()
    generate(load_config(path))
    out = stage_dir(load_config(path), "generate")
    before = (out / "traces.jsonl").read_bytes()
    with pytest.raises(UserError, match=r"generate.max_new_tokens: 8 -> 9.*--overwrite"):
        generate(load_config(path, ["generate.max_new_tokens=9"]))
    assert (out / "traces.jsonl").read_bytes() == before
    generate(load_config(path, ["generate.max_new_tokens=9"]), overwrite=True)
    assert [r.sampling["max_new_tokens"] for r in read_rows(out / "traces.jsonl", Trace)] == [9] * 6
    [aside] = out.parent.glob("generate.replaced-*")
    assert (aside / "traces.jsonl").read_bytes() == before


def test_growing_the_selection_keeps_the_traces_already_written(make_config, scripted):
    scripted.SCRIPT = correct_script()
    path = make_config()
    generate(load_config(path, ["data.max_train=3"]))
    calls = scripted.calls
    stats = generate(load_config(path))  # 3 -> 6 problems: only the 3 new ones are asked
    assert stats["traces"] == 6 and stats["problems_this_run"] == 3 and scripted.calls == calls + 1
    stats = generate(load_config(path, ["data.max_train=2"]))  # shrinking: the other rows stay in the file, unused
    assert stats["traces"] == 2 and len(read_rows(stage_dir(load_config(path), "generate") / "traces.jsonl", Trace)) == 6


def test_transformers_backend_generates_n_samples(tiny_model):
    from llmdistill.backends import Request, SamplingParams
    from llmdistill.backends.transformers import TransformersBackend

    backend = TransformersBackend(tiny_model, batch_size=2)
    requests = [Request(id=q, index=i, prompt=f"Q: {q}?", seed=i) for i, q in enumerate(["a", "bb", "ccc"])]
    out = backend.generate(requests, SamplingParams(n=2, temperature=1.0, max_new_tokens=5))
    assert [len(o) for o in out] == [2, 2, 2]
    flat = [c for completions in out for c in completions]
    for c in flat:
        assert 1 <= c.completion_tokens <= 5 and c.prompt_tokens > 0
        assert (c.finish_reason == "length") == (c.completion_tokens == 5 and c.token_ids[-1] not in backend.eos_ids)
    assert any(c.finish_reason == "length" for c in flat)  # a random tiny model runs to the limit
    again = backend.generate(requests[::-1], SamplingParams(n=2, temperature=1.0, max_new_tokens=5))[::-1]
    assert [[c.text for c in o] for o in out] == [[c.text for c in o] for o in again]  # per-request seeds
    backend.batch_size = 3  # the whole batch at once, or one at a time: the same samples
    assert [[c.text for c in o] for o in backend.generate(requests, SamplingParams(n=2, temperature=1.0, max_new_tokens=5))] == [
        [c.text for c in o] for o in out
    ]
    backend.batch_size = 1
    assert [[c.text for c in o] for o in backend.generate(requests, SamplingParams(n=2, temperature=1.0, max_new_tokens=5))] == [
        [c.text for c in o] for o in out
    ]
    assert len({c.text for o in out for c in o}) > 3  # samples differ from each other
    rows, generate = [], backend.model.generate
    backend.model.generate = lambda **kw: rows.append(kw["input_ids"].shape[0]) or generate(**kw)
    backend.batch_size = 2  # teacher.batch_size is read when sampling too: 2 prompts x 2 samples a call
    backend.generate(requests, SamplingParams(n=2, temperature=1.0, max_new_tokens=5))
    assert rows == [4, 2]
    backend.model.generate = generate
    [[greedy]] = backend.generate(
        [Request(id="a", index=0, prompt=[{"role": "user", "content": "Q: a?"}])], SamplingParams(max_new_tokens=4, logprobs=3)
    )
    assert len(greedy.top_logprobs) == greedy.completion_tokens and len(greedy.top_logprobs[0]) == 3
    assert greedy.top_logprobs[0][0][1] >= greedy.top_logprobs[0][1][1]


def test_rationalization_asks_again_with_the_gold_answer_where_no_sample_was_correct(make_config, scripted):
    scripted.SCRIPT = correct_script(4)  # problems 4 and 5 are answered wrongly
    cfg = load_config(make_config(generate={"rationalize": True}))
    stats = generate(cfg)
    rows = read_rows(stage_dir(cfg, "generate") / "traces.jsonl", Trace)
    hinted = [r for r in rows if r.rationalized]
    assert stats["rationalized"] == 2 and sorted(r.id for r in hinted) == ["tr4", "tr5"]
    assert all(r.sample == 1 and "Hint: the answer is" in r.prompt for r in hinted)
    assert hinted[0].completion.endswith("The answer is 6.")
    from llmdistill.stages.filter.run import filter_traces

    fstats = filter_traces(cfg)
    assert fstats["kept"] == 6 and fstats["rejected"] == 2  # 4 direct + 2 rationalized kept; 2 wrong first tries
    calls = scripted.calls
    generate(cfg)  # rerun: nothing left to ask
    assert scripted.calls == calls


def test_the_ray_engine_without_ray_is_a_one_line_error(make_config, scripted, monkeypatch):
    import sys

    from llmdistill.config.file import load_config
    from llmdistill.errors import UserError
    from llmdistill.stages.generate.run import generate

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(UserError, match=r"generate.engine 'ray' needs Ray: pip install 'llmdistill\[ray\]'") as e:
        generate(load_config(make_config(generate={"engine": "ray"})))
    assert "\n" not in str(e.value)
