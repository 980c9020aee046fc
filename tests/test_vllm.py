"""The vLLM backends on a tiny local model: in-process `vllm.LLM`, and a real `vllm serve`
(OpenAI-compatible) server on 127.0.0.1. Slow: each engine takes about a minute to start on CPU."""

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from llmdistill.backends import Request, SamplingParams
from tests.ci_policy import require

pytestmark = pytest.mark.slow
require("vllm")


@pytest.fixture(scope="module")
def vllm_model(tmp_path_factory) -> str:
    """A student saved by the train stage -- a tiny Llama (head size 64, which vLLM's CPU
    attention kernels support) after one step-by-step LoRA step, merged -- so the engines below
    also show that trained students load in vLLM."""
    from llmdistill.config import Config
    from llmdistill.records import TrainExample
    from llmdistill.train.checkpoints import save_model
    from llmdistill.train.trainers import make_trainer
    from tests.conftest import ROOT, save_tiny_llama

    base = save_tiny_llama(tmp_path_factory.mktemp("vllm-tiny"), hidden=128, layers=2, heads=2, kv_heads=2)
    cfg = Config.model_validate({
        "output_dir": str(tmp_path_factory.mktemp("run")), "data": {"path": "unused", "prompt": str(ROOT / "prompts" / "arithmetic_cot.yaml")},
        "teacher": {"model_name_or_path": base}, "student": {"init": "pretrained", "model_name_or_path": base},
        "train": {"mode": "step_by_step", "max_steps": 1, "per_device_train_batch_size": 2, "lora": {"r": 4}, "preflight_probe": False},
    })
    examples = [TrainExample(id="a", task="label", prompt="Q: 1 + 2?", completion=" The answer is 3."),
                TrainExample(id="a", task="rationale", prompt="Q: 1 + 2?", completion=" 1 + 2 = 3.")]
    out = tmp_path_factory.mktemp("student") / "model"
    trainer = make_trainer(cfg, base, examples, str(out.parent / "ckpt"))
    trainer.train()
    save_model(trainer, out, merge=True)
    return str(out)


def _requests():
    return [Request(id=f"p{i}", index=i, prompt=[{"role": "user", "content": f"Q: how many {i}?"}], seed=100 + i) for i in range(3)]


def test_in_process_engine(vllm_model):
    from llmdistill.backends.vllm import VLLMBackend

    backend = VLLMBackend(vllm_model, dtype="float32", max_model_len=1024, enable_prefix_caching=True)
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=6, stop=["\nQ:"], logprobs=3)
    out = backend.generate(_requests(), params)
    assert [len(o) for o in out] == [2, 2, 2]
    flat = [x for o in out for x in o]
    assert all(x.finish_reason == "stop" or x.completion_tokens == 6 for x in flat)  # "length" only at the limit
    assert any(x.finish_reason == "length" for x in flat)  # a random tiny model runs to it
    c = out[0][0]
    assert c.prompt_tokens > 5 and 1 <= c.completion_tokens <= 6
    assert len(c.top_logprobs) == c.completion_tokens == len(c.token_ids) and len(c.top_logprobs[0]) == 3
    assert isinstance(c.top_logprobs[0][0][0], int) and c.top_logprobs[0][0][1] >= c.top_logprobs[0][2][1]
    # Per-request seeds: the same problem samples the same text whatever its batch and order.
    again = backend.generate(_requests()[::-1], params)[::-1]
    assert [[x.text for x in o] for o in out] == [[x.text for x in o] for o in again]
    long = backend.generate(_requests()[:1], SamplingParams(max_new_tokens=4))
    assert long[0][0].completion_tokens <= 4 and (long[0][0].finish_reason == "stop" or long[0][0].completion_tokens == 4)
    backend.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_vllm_serve_openai_server(vllm_model, tmp_path):
    from llmdistill.backends.openai import OpenAIBackend

    port = _free_port()
    env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", f"0-{os.cpu_count() - 1}"),
           "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", vllm_model, "--served-model-name", "tiny",
         "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--max-model-len", "1024", "--gpu-memory-utilization", "0.3"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(2)
        else:
            pytest.fail("vllm server did not start in 300 s")
        backend = OpenAIBackend("tiny", base_url=f"http://127.0.0.1:{port}/v1", api="chat", concurrency=2, max_retries=1)
        out = backend.generate(_requests(), SamplingParams(n=2, temperature=1.0, max_new_tokens=5, logprobs=2))
        assert [len(o) for o in out] == [2, 2, 2]
        c = out[0][0]
        assert c.prompt_tokens > 5 and len(c.top_logprobs[0]) == 2
        assert all(x.finish_reason == "stop" or x.completion_tokens == 5 for o in out for x in o)
        completions = OpenAIBackend("tiny", base_url=f"http://127.0.0.1:{port}/v1", api="completions", max_retries=1)
        [[p]] = completions.generate([Request(id="x", index=0, prompt="Q: one?\nA:")], SamplingParams(max_new_tokens=5, logprobs=2))
        assert p.completion_tokens >= 1 and len(p.top_logprobs[0]) == 2
    finally:
        server.terminate()
        server.wait(timeout=60)
