"""Running out of memory in the local engines ends with one line naming the settings to lower;
other errors pass through. No real OOM and no vLLM engine: the failures are injected."""

import sys
import types

import pytest
import torch

from llmdistill.backends import Request, SamplingParams
from llmdistill.backends.transformers import TransformersBackend, is_oom, oom_message
from llmdistill.backends.vllm import VLLMBackend, is_memory_error
from llmdistill.errors import UserError

CPU_OOM = "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to allocate 123 bytes. Error code 12"
REQUESTS = [Request(id=q, index=i, prompt=f"Q: {q}?", seed=i) for i, q in enumerate(["a", "bb", "ccc"])]


def raising(exc):
    def fail(*args, **kwargs):
        raise exc

    return fail


@pytest.fixture(scope="module")
def hf_backend(tiny_model):
    return TransformersBackend(tiny_model, batch_size=2)


def test_cpu_out_of_memory_names_the_batch_size(hf_backend, monkeypatch):
    monkeypatch.setattr(hf_backend.model, "generate", raising(RuntimeError(CPU_OOM)))
    with pytest.raises(UserError) as err:
        hf_backend.generate(REQUESTS, SamplingParams(max_new_tokens=7))
    assert str(err.value) == (
        "out of memory generating a batch of 2 prompts (max_new_tokens 7) on cpu: lower the batch size "
        "(teacher.batch_size when generating, evaluate.batch_size when evaluating) or max_new_tokens"
    )


@pytest.mark.parametrize("exc", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), MemoryError()])
def test_cuda_and_python_out_of_memory_in_a_sampled_batch_name_the_samples(hf_backend, monkeypatch, exc):
    monkeypatch.setattr(hf_backend.model, "generate", raising(exc))
    with pytest.raises(UserError) as err:
        hf_backend.generate(REQUESTS, SamplingParams(n=4, temperature=0.7, max_new_tokens=7))
    message = str(err.value)
    assert "\n" not in message and message.startswith("out of memory generating a batch of 2 prompts x 4 samples (max_new_tokens 7) on cpu")
    assert "generate.n" in message and "batch_size" in message  # sampled problems are batched too


def test_an_unrelated_runtime_error_passes_through(hf_backend, monkeypatch):
    monkeypatch.setattr(hf_backend.model, "generate", raising(RuntimeError("Expected all tensors to be on the same device")))
    with pytest.raises(RuntimeError, match="same device") as err:
        hf_backend.generate(REQUESTS, SamplingParams(max_new_tokens=7))
    assert not isinstance(err.value, UserError)


def test_is_oom():
    assert is_oom(RuntimeError(CPU_OOM)) and is_oom(RuntimeError("CUDA error: out of memory")) and is_oom(MemoryError())
    assert is_oom(torch.OutOfMemoryError("CUDA out of memory"))
    assert not is_oom(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) and not is_oom(ValueError("out of memory"))


def test_oom_message_joins_the_knobs():
    assert oom_message(1, 1, 9, "cuda:0").endswith("on cuda:0: lower max_new_tokens")
    assert oom_message(3, 1, 9, "vLLM", "gpu_memory_utilization").endswith(
        "evaluate.batch_size when evaluating), gpu_memory_utilization or max_new_tokens"
    )


@pytest.mark.parametrize(
    ("exc", "memory"),
    [
        (
            ValueError("No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing the engine."),
            True,
        ),
        (
            ValueError(
                "To serve at least one request with the model's max seq len (32768), (4.0 GiB KV cache is needed, which is larger "
                "than the available KV cache memory (1.2 GiB). Try increasing `gpu_memory_utilization` or decreasing `max_model_len`"
            ),
            True,
        ),
        (
            ValueError(
                "The model's max seq len (4096) is larger than the maximum number of tokens that can be stored in KV cache (2048). "
                "Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine."
            ),
            True,
        ),
        (ValueError("Free memory on device (3.1/79.2 GiB) on startup is less than desired GPU memory utilization (0.9, 71.3 GiB)."), True),
        (RuntimeError("insufficient memory to load the model"), True),
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.50 GiB"), True),
        (OSError(12, "Cannot allocate memory"), True),
        (ValueError("KV cache layout BLHNC cannot express this model's mixed page sizes"), False),
        (ValueError("User-specified max_model_len (9000) is greater than the derived max_model_len (4096)"), False),
        (RuntimeError("Engine core initialization failed. See root cause above. Failed core proc(s): {}"), False),
        (OSError(2, "No such file or directory"), False),
        (KeyError("memory"), False),
    ],
)
def test_is_memory_error(exc, memory):
    assert is_memory_error(exc) is memory


class FakeLLM:
    """Stands in for ``vllm.LLM``: fails at start-up with ``START``, or in ``generate`` with ``GENERATE``."""

    START: BaseException | None = None
    GENERATE: BaseException | None = None

    def __init__(self, **kwargs):
        if self.START:
            raise self.START

    def get_tokenizer(self):
        return types.SimpleNamespace(chat_template=None)

    def generate(self, *args, **kwargs):
        raise self.GENERATE


@pytest.fixture
def fake_vllm(monkeypatch):
    """A fake ``vllm`` module, so no engine starts; the CPU defaults it sets are undone after the test."""
    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=FakeLLM, SamplingParams=lambda **kw: kw))
    for var in ("VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_NUM_OF_RESERVED_CPU"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(FakeLLM, "START", None)
    monkeypatch.setattr(FakeLLM, "GENERATE", None)
    return FakeLLM


def test_vllm_startup_without_memory_names_its_settings(fake_vllm):
    fake_vllm.START = ValueError("No available memory for the cache blocks.\nTry increasing `gpu_memory_utilization`.")
    with pytest.raises(UserError) as err:
        VLLMBackend("some/model", gpu_memory_utilization=0.5, max_model_len=2048)
    message = str(err.value)
    assert "\n" not in message and "(No available memory for the cache blocks. Try increasing" in message
    assert "max_model_len (now 2048)" in message and "gpu_memory_utilization (now 0.5;" in message and "evaluate.*" in message


def test_vllm_engine_process_that_did_not_start_is_one_line(fake_vllm):
    fake_vllm.START = RuntimeError("Engine core initialization failed. See root cause above. Failed core proc(s): {}")
    with pytest.raises(UserError, match=r"did not start \(its reason is in the log above\).*gpu_memory_utilization \(now 0.3\)$"):
        VLLMBackend("some/model", gpu_memory_utilization=0.3)


def test_vllm_startup_errors_about_other_things_pass_through(fake_vllm):
    fake_vllm.START = ValueError("User-specified max_model_len (9000) is greater than the derived max_model_len (4096)")
    with pytest.raises(ValueError, match="User-specified"):
        VLLMBackend("some/model")


def test_vllm_out_of_memory_in_generate_names_the_batch_size(fake_vllm):
    fake_vllm.GENERATE = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.00 GiB")
    backend = VLLMBackend("some/model")
    with pytest.raises(
        UserError,
        match=r"^out of memory generating a batch of 3 prompts \(max_new_tokens 7\) on vLLM: lower the batch size .*"
        r"gpu_memory_utilization .* or max_new_tokens$",
    ):
        backend.generate(REQUESTS, SamplingParams(max_new_tokens=7))
    fake_vllm.GENERATE = RuntimeError("unrelated")
    with pytest.raises(RuntimeError, match="unrelated"):
        backend.generate(REQUESTS, SamplingParams(max_new_tokens=7))
