"""generate.ray.processor: ray_llm -- a vLLM teacher through ray.data.llm. vLLM in Ray actors
needs GPUs, so here the rows Ray is given, the traces made from its output rows, the processor's
settings, and (slow) the driver's loop with Ray's processor replaced by a Ray Data map that
answers like an engine: every missing sample asked once, written once, resumed exactly."""

from __future__ import annotations

import json

import pytest

from llmdistill.backends import SamplingParams, request_seed
from llmdistill.config.file import load_config
from llmdistill.errors import UserError
from llmdistill.outputs import stage_dir
from llmdistill.prompts import load_prompt
from llmdistill.records import Problem
from llmdistill.stages.generate.ray_llm import llm_rows, processor_config, trace_of


def _cfg(make_config, tiny_model, **generate):
    return load_config(
        make_config(
            teacher={"backend": "vllm", "model_name_or_path": tiny_model, "tensor_parallel_size": 2},
            generate={"engine": "ray", "ray": {"processor": "ray_llm", "replicas": 3, "batch_size": 5}, **generate},
        )
    )


def test_ray_llm_needs_a_vllm_teacher(make_config):
    with pytest.raises(UserError, match="processor 'ray_llm' is Ray's vLLM batch API: it needs teacher.backend 'vllm'"):
        load_config(make_config(teacher={"backend": "transformers"}, generate={"engine": "ray", "ray": {"processor": "ray_llm"}}))


def test_rows_ask_each_missing_sample_once_with_the_local_prompt_and_seed(make_config, tiny_model):
    from llmdistill.backends.transformers import chat_text, load_tokenizer
    from llmdistill.prompts import build_prompt

    cfg = _cfg(make_config, tiny_model, n=3, temperature=0.7, seed=5, logprobs=4)
    template, tok = load_prompt(cfg.data.prompt), load_tokenizer(tiny_model)
    params = SamplingParams(n=3, temperature=0.7, max_new_tokens=8, stop=template.stop, seed=5, logprobs=4)
    problems = [Problem(id=f"p{i}", question=f"Sam has {i} apples. How many?", answer=str(i)) for i in range(2)]
    rows = llm_rows(cfg, template, params, tok, problems, written=lambda pid, s: (pid, s) == ("p0", 1))
    assert [(json.loads(r["problem"])["id"], r["sample"]) for r in rows] == [("p0", 0), ("p0", 2), ("p1", 0), ("p1", 1), ("p1", 2)]
    assert rows[0]["prompt"] == chat_text(tok, build_prompt(template, problems[0].question, cfg.data.num_shots, True))
    assert len({r["seed"] for r in rows}) == 5  # n > 1: a seed per sample
    sp = rows[0]["sampling_params"]
    assert sp == {
        "n": 1,
        "temperature": 0.7,
        "top_p": 1.0,
        "max_tokens": 8,
        "stop": list(template.stop),
        "seed": rows[0]["seed"],
        "logprobs": 4,
    }
    one = llm_rows(cfg, template, SamplingParams(n=1, max_new_tokens=8, seed=5), tok, problems, written=lambda pid, s: False)
    assert [r["seed"] for r in one] == [request_seed(5, "p0"), request_seed(5, "p1")]  # the local engine's request seeds


def test_an_output_row_becomes_a_trace_with_provenance(make_config, tiny_model):
    cfg = _cfg(make_config, tiny_model)
    template = load_prompt(cfg.data.prompt)
    params = SamplingParams(n=1, max_new_tokens=4, seed=0, logprobs=2)
    row = {
        "problem": Problem(id="p0", question="q?", answer="3").model_dump_json(),
        "sample": 0,
        "seed": 11,
        "prompt": "Q: q?",
        "generated_text": "The answer is 3.",
        "generated_tokens": [5, 6, 7],
        "num_generated_tokens": 3,
        "num_input_tokens": 9,
        "logprobs": [{5: {"logprob": -0.1}, 8: {"logprob": -2.0}, 9: {"logprob": -3.0}}, {6: {"logprob": -0.2}}, {7: {"logprob": -0.3}}],
    }
    t = trace_of(cfg, template, params, row)
    assert (t.id, t.sample, t.seed, t.completion, t.finish_reason, t.completion_tokens, t.prompt_tokens) == (
        "p0",
        0,
        11,
        "The answer is 3.",
        "stop",
        3,
        9,
    )
    assert t.top_logprobs == [[[5, -0.1], [8, -2.0]], [[6, -0.2]], [[7, -0.3]]] and t.completion_ids == [5, 6, 7]
    assert (t.backend, t.teacher, t.template_hash, t.sampling["max_new_tokens"]) == ("vllm", tiny_model, template.hash, 4)
    cut = trace_of(cfg, template, params, {**row, "generated_tokens": [1, 2, 3, 4], "num_generated_tokens": 4})
    assert cut.finish_reason == "length"  # all max_new_tokens used: taken as cut, so the truncated filter drops it


def test_the_processor_runs_the_teachers_parallelism_on_each_replica(make_config, tiny_model):
    c = processor_config(_cfg(make_config, tiny_model))
    assert (c.model_source, c.concurrency, c.batch_size) == (tiny_model, 3, 5)
    assert c.engine_kwargs["tensor_parallel_size"] == 2 and c.engine_kwargs["pipeline_parallel_size"] == 1


@pytest.mark.slow
def test_the_driver_writes_every_sample_once_and_resumes(ray_cluster, make_config, tiny_model, monkeypatch, tmp_path):
    """Ray's processor swapped for a Ray Data map that answers from the prompt (as an engine
    would, one completion a row): the stage writes n traces a problem, and after losing some a
    rerun asks only for those (on the session's local cluster, tests/engines.py)."""
    import llmdistill.stages.generate.ray_llm as generate_ray_llm
    from llmdistill.jsonl import read_rows
    from llmdistill.records import Trace
    from llmdistill.stages.generate.run import generate

    def fake_build(cfg):
        def answer(row):
            return {
                **{k: row[k] for k in ("problem", "sample", "seed", "prompt")},
                "generated_text": f"s{row['sample']} seed {row['seed']}",
                "generated_tokens": [1, 2],
                "num_generated_tokens": 2,
                "num_input_tokens": len(row["prompt"]),
                "logprobs": None,
            }

        return lambda ds: ds.map(answer)

    monkeypatch.setattr(generate_ray_llm, "build", fake_build)
    cfg = _cfg(make_config, tiny_model, n=2, temperature=1.0)
    stats = generate(cfg)
    path = stage_dir(cfg, "generate") / "traces.jsonl"
    rows = read_rows(path, Trace)
    assert stats["traces"] == len(rows) == len({t.key for t in rows}) == 12 and stats["ray"]["processor"] == "ray_llm"
    assert all(t.completion == f"s{t.sample} seed {t.seed}" for t in rows)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:9]))  # three samples lost
    stats = generate(cfg)
    again = read_rows(path, Trace)
    assert sorted(t.key for t in again) == sorted(t.key for t in rows) and stats["problems_this_run"] == len({t.id for t in rows[9:]})
