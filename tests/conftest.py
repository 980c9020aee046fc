"""Shared fixtures: a tiny Llama model and byte-level BPE tokenizer built locally, and a
scripted teacher backend whose answers a test queues up. No hub, no network, no GPU."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from llmdistill.backends import Backend, Completion, Request, SamplingParams
from llmdistill.outputs import stage_dir

ROOT = Path(__file__).resolve().parents[1]
SCRIPTED = "tests.conftest:ScriptedBackend"  # the scripted teacher, named as a plugin backend by its path
pytest_plugins = ["tests.ci_policy", "tests.engines"]  # CI=true: a skip must be explained; the real engines, once a session
SVAMP = ROOT / "data" / "svamp"  # SVAMP with the PaLM-540B completions, carried in the project
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer(vocab_size: int = 400, corpus: list[str] | None = None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = corpus or [(ROOT / "prompts" / "arithmetic_cot.yaml").read_text(), (ROOT / "data" / "quickstart" / "train.jsonl").read_text()]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>", unk_token="<|endoftext|>"
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def save_tiny_llama(out: Path, hidden: int, layers: int, heads: int, kv_heads: int, tokenizer=None) -> str:
    """A randomly initialised Llama of the given shape and the test tokenizer (or ``tokenizer``), saved to ``out``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tokenizer or build_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A 4-layer Llama with hidden size 16 and its tokenizer, saved once per session."""
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), hidden=16, layers=4, heads=2, kv_heads=1)


class ScriptedBackend(Backend):
    """A teacher whose completion for each question a test queues up in ``SCRIPT``.

    A question with no script gets a wrong answer; ``FAIL_AFTER`` simulates a crash after that
    many ``generate`` calls.
    """

    name = "scripted"
    SCRIPT: dict[str, list[str]] = {}
    FAIL_AFTER: int | None = None
    calls = 0

    supports_chat = True

    def __init__(self, model_name_or_path: str, **_):
        from llmdistill.backends.transformers import load_tokenizer

        self.model_name = model_name_or_path
        self.tokenizer = load_tokenizer(model_name_or_path)

    def prompt_text(self, prompt) -> str:
        from llmdistill.backends.transformers import chat_text

        return chat_text(self.tokenizer, prompt)

    def generate(self, requests: list[Request], params: SamplingParams) -> list[list[Completion]]:
        type(self).calls += 1
        if self.FAIL_AFTER is not None and self.calls > self.FAIL_AFTER:
            raise KeyboardInterrupt("simulated crash")
        out = []
        for r in requests:
            prompt = self.prompt_text(r.prompt)
            question = re.findall(r"Q: (.*?)(?:<\|im_end\|>|\n|$)", prompt)[-1]
            texts = self.SCRIPT.get(question, ["I think so. The answer is -1."])
            hint = re.search(r"\(Hint: the answer is (.*?)\. Explain why\.\)", prompt)
            if hint:  # a rationalization request: justify the given answer
                texts = [f"Working back from the hint gives {hint.group(1)}. The answer is {hint.group(1)}."]
            out.append(
                [
                    Completion(text=texts[s % len(texts)], finish_reason="stop", prompt_tokens=len(prompt) // 4, completion_tokens=12)
                    for s in range(params.n)
                ]
            )
        return out

    def num_parameters(self) -> int:
        return 0

    def close(self) -> None:
        pass


@pytest.fixture
def scripted(monkeypatch):
    """The scripted backend (``teacher.backend: tests.conftest:ScriptedBackend``, a plugin by path), reset for the test."""
    monkeypatch.setattr(ScriptedBackend, "SCRIPT", {})
    monkeypatch.setattr(ScriptedBackend, "FAIL_AFTER", None)
    monkeypatch.setattr(ScriptedBackend, "calls", 0)
    return ScriptedBackend


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def make_config(tmp_path, tiny_model):
    """Writes a small run config on the tiny model and a 6/4-problem dataset; returns its path."""

    def make(**sections) -> Path:
        import yaml

        train = [
            {"id": f"tr{i}", "question": f"Sam has {i} apples and gets 2 more. How many apples does Sam have?", "answer": str(i + 2)}
            for i in range(6)
        ]
        test = [
            {"id": f"te{i}", "question": f"Mia has {i + 10} pens and gets 1 more. How many pens does Mia have?", "answer": str(i + 11)}
            for i in range(4)
        ]
        write_jsonl(tmp_path / "data" / "train.jsonl", train)
        write_jsonl(tmp_path / "data" / "test.jsonl", test)
        cfg = {
            "output_dir": str(tmp_path / "run"),
            "data": {"path": str(tmp_path / "data"), "prompt": str(ROOT / "prompts" / "arithmetic_cot.yaml"), "num_shots": 1},
            "teacher": {"model_name_or_path": tiny_model, "backend": SCRIPTED, "batch_size": 4},
            "generate": {"max_new_tokens": 8},
            "student": {"init": "pruned", "keep_layers": "every_other"},
            "train": {"max_steps": 2, "per_device_train_batch_size": 2, "max_length": 512, "logging_steps": 1},
            "evaluate": {"max_new_tokens": 8, "batch_size": 4},
        }
        for name, value in sections.items():
            cfg[name] = {**cfg.get(name, {}), **value} if isinstance(value, dict) else value
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    return make


def correct_script(n: int = 6) -> dict[str, list[str]]:
    """Correct teacher answers for the train questions of ``make_config``."""
    return {
        f"Sam has {i} apples and gets 2 more. How many apples does Sam have?": [f"Sam has {i} + 2 = {i + 2} apples. The answer is {i + 2}."]
        for i in range(n)
    }


def correct_test_script() -> dict[str, list[str]]:
    """Correct teacher answers for the test questions of ``make_config``."""
    return {
        f"Mia has {i + 10} pens and gets 1 more. How many pens does Mia have?": [f"{i + 10} + 1 = {i + 11}. The answer is {i + 11}."]
        for i in range(4)
    }


def run_to_filter(make_config, scripted, **sections):
    """A config from ``make_config(**sections)`` with the teacher's traces generated (all correct) and filtered."""
    from llmdistill.config.file import load_config
    from llmdistill.stages.filter.run import filter_traces
    from llmdistill.stages.generate.run import generate

    scripted.SCRIPT = correct_script()
    cfg = load_config(make_config(**sections))
    generate(cfg)
    filter_traces(cfg)
    return cfg


def weights_changed(cfg) -> bool:
    """Whether training changed the student: the saved model's weights against the untrained init's."""
    import torch
    from safetensors.torch import load_file

    before = load_file(stage_dir(cfg, "train") / "init" / "model.safetensors")
    after = load_file(stage_dir(cfg, "train") / "model" / "model.safetensors")
    return before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)


FAKE_TENSORBOARDX = '''
import json, os


class SummaryWriter:
    """Records what transformers' TensorBoardCallback writes, as JSON lines in log_dir."""

    def __init__(self, log_dir=None, **_):
        os.makedirs(log_dir, exist_ok=True)
        self.file = open(os.path.join(log_dir, "scalars.jsonl"), "a")

    def add_scalar(self, tag, value, step):
        self.file.write(json.dumps({"tag": tag, "value": value, "step": step}) + "\\n")

    def add_text(self, *args, **kwargs):
        pass

    def add_hparams(self, *args, **kwargs):
        pass

    def flush(self):
        self.file.flush()

    def close(self):
        self.file.close()
'''


def fake_tensorboardx(site: Path) -> Path:
    """A folder holding a stand-in ``tensorboardX`` (what transformers' tensorboard callback falls
    back to without the tensorboard package), for a test to put on the path."""
    (site / "tensorboardX").mkdir(parents=True, exist_ok=True)
    (site / "tensorboardX" / "__init__.py").write_text(FAKE_TENSORBOARDX)
    return site
