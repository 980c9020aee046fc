"""Transformers backend: batched ``generate`` with left padding; the CPU fallback."""

from __future__ import annotations

import logging
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmdistill.answers import cut_at_stop
from llmdistill.backends import Completion, SamplingParams
from llmdistill.errors import UserError

log = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_tokenizer(model_name_or_path: str):
    try:
        tok = AutoTokenizer.from_pretrained(model_name_or_path)
    except (OSError, ValueError) as e:
        raise UserError(f"could not load tokenizer from {model_name_or_path!r}: {str(e).splitlines()[0]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(model_name_or_path: str, dtype: str = "float32", device: str = "auto"):
    try:
        model = AutoModelForCausalLM.from_pretrained(model_name_or_path, dtype=DTYPES[dtype])
    except (OSError, ValueError) as e:
        raise UserError(f"could not load model from {model_name_or_path!r}: {str(e).splitlines()[0]}") from None
    return model.to(resolve_device(device)).eval()


class TransformersBackend:
    name = "transformers"

    def __init__(self, model_name_or_path: str, dtype: str = "float32", device: str = "auto", batch_size: int = 16, **_):
        self.model_name = model_name_or_path
        self.tokenizer = load_tokenizer(model_name_or_path)
        self.tokenizer.padding_side = "left"
        self.model = load_model(model_name_or_path, dtype, device)
        self.batch_size = batch_size

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def _encode(self, prompts: list[str]):
        # Chat-templated prompts already carry their special tokens; plain ones get the usual BOS.
        bos = self.tokenizer.bos_token
        add_special = not (bos and all(p.startswith(bos) for p in prompts))
        return self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=add_special).to(self.model.device)

    @torch.inference_mode()
    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        out: list[list[Completion]] = []
        for start in range(0, len(prompts), self.batch_size):
            out.extend(self._generate_batch(prompts[start : start + self.batch_size], params, seed=params.seed + start))
        return out

    def _generate_batch(self, prompts: list[str], params: SamplingParams, seed: int) -> list[list[Completion]]:
        enc = self._encode(prompts)
        torch.manual_seed(seed)
        sample = params.temperature > 0
        t0 = time.perf_counter()
        gen = self.model.generate(
            **enc,
            do_sample=sample,
            temperature=params.temperature if sample else None,
            top_p=params.top_p if sample else None,
            top_k=None,
            max_new_tokens=params.max_new_tokens,
            num_return_sequences=params.n,
            stop_strings=params.stop or None,
            tokenizer=self.tokenizer,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        latency = (time.perf_counter() - t0) / len(prompts)
        new = gen[:, enc["input_ids"].shape[1] :]
        prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
        eos_ids = set(self.model.generation_config.eos_token_id if isinstance(self.model.generation_config.eos_token_id, list) else [self.model.generation_config.eos_token_id or self.tokenizer.eos_token_id])
        results = []
        for i, seq in enumerate(new.tolist()):
            n_tokens = len(seq)
            ended = False
            for j, tok in enumerate(seq):
                if tok in eos_ids:
                    n_tokens, ended = j + 1, True
                    break
            raw = self.tokenizer.decode(seq[:n_tokens], skip_special_tokens=True)
            text = cut_at_stop(raw, params.stop)
            stopped = ended or len(text) < len(raw) or n_tokens < params.max_new_tokens
            results.append(Completion(text=text, finish_reason="stop" if stopped else "length", prompt_tokens=prompt_lens[i // params.n], completion_tokens=n_tokens, latency_s=latency))
        return [results[k * params.n : (k + 1) * params.n] for k in range(len(prompts))]

    def close(self) -> None:
        del self.model
