"""Transformers backend: batched ``generate`` with left padding; the CPU fallback.

Requests are batched (``batch_size`` prompts, each with its ``n`` samples). A sampled row draws
its tokens from a random generator of its own, seeded by its request and sample number
(``RowSampler``), so a sample never depends on what it was batched with.
Running out of memory in a batch ends the stage with one line naming the settings to lower.
"""

from __future__ import annotations

import logging
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmdistill.answers.reading import cut_at_stop
from llmdistill.backends import Backend, Completion, Prompt, Request, SamplingParams
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


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocator running out: CUDA's OutOfMemoryError, or the CPU allocator's RuntimeError."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    message = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in message or "can't allocate memory" in message)


def oom_message(prompts: int, n: int, max_new_tokens: int, where: str, *more: str) -> str:
    """One line for an out-of-memory batch, naming the settings that shrink it (``more``: the engine's own)."""
    batch = f"{prompts} prompt{'s' if prompts > 1 else ''}" + (f" x {n} samples" if n > 1 else "")
    knobs = ["the batch size (teacher.batch_size when generating, evaluate.batch_size when evaluating)"] if prompts > 1 else []
    knobs += ["the number of samples (generate.n, evaluate.samples)"] if n > 1 else []
    knobs += [*more, "max_new_tokens"]
    lower = knobs[0] if len(knobs) == 1 else ", ".join(knobs[:-1]) + " or " + knobs[-1]
    return f"out of memory generating a batch of {batch} (max_new_tokens {max_new_tokens}) on {where}: lower {lower}"


def free_cuda_cache(device) -> None:
    """Give cached CUDA blocks back after a failure, so what runs next in the process has them."""
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def chat_text(tokenizer, prompt: Prompt) -> str:
    """A prompt as text: chat messages go through the tokenizer's chat template."""
    if isinstance(prompt, str):
        return prompt
    if not getattr(tokenizer, "chat_template", None):
        raise UserError("chat messages were given but the tokenizer has no chat template (set data.prompt_format: completion)")
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


class RowSampler:
    """A logits processor that samples each row of the batch with a generator of its own (softmax
    at ``temperature``, nucleus ``top_p``) and returns scores under which greedy decoding picks
    that sample. ``generate``'s own sampler draws every row from one global generator, so a row's
    tokens would depend on its neighbours in the batch."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float, device):
        self.generators = [torch.Generator(device=device).manual_seed(s % 2**63) for s in seeds]
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids, scores):  # scores: [rows, vocab]
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        if self.top_p < 1.0:
            sorted_p, order = probs.sort(dim=-1, descending=True)
            outside = sorted_p.cumsum(-1) - sorted_p > self.top_p  # tokens past the nucleus (the first always stays)
            probs = probs.scatter(-1, order, sorted_p.masked_fill(outside, 0.0))
        picked = torch.stack([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, self.generators)])
        return torch.full_like(scores, float("-inf")).scatter(-1, picked, 0.0)


class TransformersBackend(Backend):
    name = "transformers"

    def __init__(self, model_name_or_path: str, dtype: str = "float32", device: str = "auto", batch_size: int = 16):
        self.model_name = model_name_or_path
        self.tokenizer = load_tokenizer(model_name_or_path)
        self.tokenizer.padding_side = "left"
        self.supports_chat = bool(getattr(self.tokenizer, "chat_template", None))
        self.model = load_model(model_name_or_path, dtype, device)
        self.batch_size = batch_size
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos if eos is not None else self.tokenizer.eos_token_id])

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def prompt_text(self, prompt: Prompt) -> str:
        return chat_text(self.tokenizer, prompt)

    def _encode(self, texts: list[str]):
        # Chat-templated prompts already carry their special tokens; plain ones get the usual BOS.
        bos = self.tokenizer.bos_token
        add_special = not (bos and all(t.startswith(bos) for t in texts))
        return self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=add_special).to(self.model.device)

    @torch.inference_mode()
    def generate(self, requests: list[Request], params: SamplingParams) -> list[list[Completion]]:
        out: list[list[Completion]] = []
        for start in range(0, len(requests), self.batch_size):
            out.extend(self._checked_batch(requests[start : start + self.batch_size], params))
        return out

    def _checked_batch(self, requests: list[Request], params: SamplingParams) -> list[list[Completion]]:
        """``_generate_batch``, with running out of memory turned into a UserError naming what to lower."""
        try:
            return self._generate_batch(requests, params)
        except (RuntimeError, MemoryError) as e:
            if not is_oom(e):
                raise
            log.debug("generate ran out of memory: %s", str(e))  # a string: a kept record must not pin the batch's tensors
        # Out of the except block, the failed batch's tensors are unreferenced and the cache can go back.
        free_cuda_cache(self.model.device)
        raise UserError(oom_message(len(requests), params.n, params.max_new_tokens, str(self.model.device)))

    def _generate_batch(self, requests: list[Request], params: SamplingParams) -> list[list[Completion]]:
        # each prompt n times (greedy decoding takes no num_return_sequences; the sampler samples)
        enc = self._encode([self.prompt_text(r.prompt) for r in requests for _ in range(params.n)])
        sampler = None
        if params.temperature > 0:  # a row per sample: each prompt's n samples together
            seeds = [r.seed * 1_000_003 + s for r in requests for s in range(params.n)]
            sampler = RowSampler(seeds, params.temperature, params.top_p, self.model.device)
        t0 = time.perf_counter()
        gen = self.model.generate(
            **enc,
            do_sample=False,  # greedy over the sampler's one-hot scores when sampling
            logits_processor=[sampler] if sampler else None,
            temperature=None,
            top_p=None,
            top_k=None,
            max_new_tokens=params.max_new_tokens,
            stop_strings=params.stop or None,
            tokenizer=self.tokenizer,
            pad_token_id=self.tokenizer.pad_token_id,
            return_dict_in_generate=True,
            output_logits=bool(params.logprobs),
        )
        latency = (time.perf_counter() - t0) / len(requests)
        new = gen.sequences[:, enc["input_ids"].shape[1] :]
        prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
        top = self._top_logprobs(gen.logits, params.logprobs) if params.logprobs else None
        results = []
        for i, seq in enumerate(new.tolist()):
            n_tokens = next((j + 1 for j, tok in enumerate(seq) if tok in self.eos_ids), len(seq))
            while n_tokens and seq[n_tokens - 1] == self.tokenizer.pad_token_id and seq[n_tokens - 1] not in self.eos_ids:
                n_tokens -= 1  # padding after a stop string, when pad is not EOS
            raw = self.tokenizer.decode(seq[:n_tokens], skip_special_tokens=True)
            text = cut_at_stop(raw, params.stop)
            stopped = n_tokens < len(seq) or seq[n_tokens - 1] in self.eos_ids or len(text) < len(raw) or n_tokens < params.max_new_tokens
            results.append(
                Completion(
                    text=text,
                    finish_reason="stop" if stopped else "length",
                    prompt_tokens=prompt_lens[i],
                    completion_tokens=n_tokens,
                    latency_s=latency,
                    top_logprobs=top[i][:n_tokens] if top else None,
                    token_ids=seq[:n_tokens],
                )
            )
        return [results[k * params.n : (k + 1) * params.n] for k in range(len(requests))]

    @staticmethod
    def _top_logprobs(logits: tuple, k: int) -> list[list[list]]:
        """[sequence][step] -> [[token_id, logprob], ...] from the raw per-step logits."""
        steps = torch.stack(logits, dim=1).float().log_softmax(-1)  # [batch*n, steps, vocab]
        values, ids = steps.topk(k, dim=-1)
        return [
            [[[int(t), float(v)] for t, v in zip(ti, vi)] for ti, vi in zip(ids[b].tolist(), values[b].tolist())]
            for b in range(steps.shape[0])
        ]

    def close(self) -> None:
        del self.model
