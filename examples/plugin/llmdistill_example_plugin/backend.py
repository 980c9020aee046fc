"""A teacher behind an in-house inference API that is not OpenAI-compatible.

The API takes ``POST {url}`` with ``{"model", "prompts", "n", "max_tokens", "temperature",
"top_p", "stop", "seeds"}`` and answers ``{"outputs": [[{"text", "finish_reason"}, ...], ...],
"usage": [{"prompt_tokens", "completion_tokens"}, ...]}``, one entry per prompt. Everything the
backend needs besides the model comes from ``teacher.options`` in the config.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request

from llmdistill.backends import Backend, Completion, Request, SamplingParams
from llmdistill.errors import UserError


class InHouseBackend(Backend):
    name = "inhouse"
    supports_chat = False  # the API takes plain prompts: the few-shot prompt is sent as Q:/A: text

    def __init__(self, model_name_or_path: str, url: str, timeout_s: float = 60.0, api_key_env: str | None = None):
        self.model_name, self.url, self.timeout_s = model_name_or_path, url, timeout_s
        self.key = os.environ.get(api_key_env) if api_key_env else None

    def generate(self, requests: list[Request], params: SamplingParams) -> list[list[Completion]]:
        body = {
            "model": self.model_name,
            "prompts": [r.prompt for r in requests],
            "n": params.n,
            "max_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stop": params.stop,
            "seeds": [r.seed for r in requests],  # per request, so sampling does not depend on batching
        }
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {self.key}"} if self.key else {})}
        t0 = time.perf_counter()
        try:
            req = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers)
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                reply = json.loads(resp.read())
        except (urllib.error.URLError, TimeoutError, json.JSONDecodeError) as e:
            # one line for the user: what failed and where (rerunning the command resumes)
            raise UserError(f"in-house API at {self.url}: {e}") from None
        latency = (time.perf_counter() - t0) / max(1, len(requests))
        return [
            [
                Completion(
                    text=o["text"],
                    finish_reason=o.get("finish_reason", "unknown"),
                    prompt_tokens=usage["prompt_tokens"],
                    completion_tokens=usage["completion_tokens"] // max(1, len(outs)),
                    latency_s=latency,
                )
                for o in outs
            ]
            for outs, usage in zip(reply["outputs"], reply["usage"], strict=True)
        ]
