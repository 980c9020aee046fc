"""The vLLM backends on the real model, with the session's engines (tests/engines.py): the
in-process `vllm.LLM` on SmolLM2, and a real `vllm serve` (OpenAI-compatible) server on 127.0.0.1
serving a student the train stage saved."""

import pytest

from llmdistill.backends import Request, SamplingParams

pytestmark = pytest.mark.slow


def _requests():
    return [Request(id=f"p{i}", index=i, prompt=[{"role": "user", "content": f"Q: how many {i}?"}], seed=100 + i) for i in range(3)]


def test_in_process_engine(vllm_engine):
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=6, stop=["\nQ:"], logprobs=3)
    out = vllm_engine.generate(_requests(), params)
    assert [len(o) for o in out] == [2, 2, 2]
    flat = [x for o in out for x in o]
    assert all(x.finish_reason == "stop" or x.completion_tokens == 6 for x in flat)  # "length" only at the limit
    assert any(x.finish_reason == "length" for x in flat)  # six tokens are too few for an answer
    c = out[0][0]
    assert c.prompt_tokens > 5 and 1 <= c.completion_tokens <= 6
    assert len(c.top_logprobs) == c.completion_tokens == len(c.token_ids) and len(c.top_logprobs[0]) == 3
    assert isinstance(c.top_logprobs[0][0][0], int) and c.top_logprobs[0][0][1] >= c.top_logprobs[0][2][1]
    # Per-request seeds: the same problem samples the same text whatever its batch and order.
    again = vllm_engine.generate(_requests()[::-1], params)[::-1]
    assert [[x.text for x in o] for o in out] == [[x.text for x in o] for o in again]
    [[short]] = vllm_engine.generate(_requests()[:1], SamplingParams(max_new_tokens=4))
    assert short.completion_tokens <= 4 and (short.finish_reason == "stop" or short.completion_tokens == 4)


def test_vllm_serve_openai_server(vllm_server):
    from llmdistill.backends.openai import OpenAIBackend

    backend = OpenAIBackend(vllm_server.name, base_url=vllm_server.url, api="chat", concurrency=2, max_retries=1)
    out = backend.generate(_requests(), SamplingParams(n=2, temperature=1.0, max_new_tokens=5, logprobs=2))
    assert [len(o) for o in out] == [2, 2, 2]
    c = out[0][0]
    assert c.prompt_tokens > 5 and len(c.top_logprobs[0]) == 2
    assert all(x.finish_reason == "stop" or x.completion_tokens == 5 for o in out for x in o)
    completions = OpenAIBackend(vllm_server.name, base_url=vllm_server.url, api="completions", max_retries=1)
    [[p]] = completions.generate([Request(id="x", index=0, prompt="Q: one?\nA:")], SamplingParams(max_new_tokens=5, logprobs=2))
    assert p.completion_tokens >= 1 and len(p.top_logprobs[0]) == 2
