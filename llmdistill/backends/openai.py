"""Any OpenAI-compatible endpoint (``vllm serve``, hosted APIs), over plain HTTP with httpx.

Requests run with bounded concurrency; 429, 5xx, timeouts, dropped connections and HTTP 200
replies that are unusable (a proxy's HTML page, not JSON, no ``choices``, not ``n`` of them) are
retried with exponential backoff (honouring ``Retry-After``) until ``max_retries`` is spent, then
the stage fails with the last error on one line. The API key is read from the environment variable named in
the config and never logged or written to an output.

``base_url`` may list several endpoints (N ``vllm serve`` replicas of one model): requests go round
the endpoints in rotation, a retry goes to the next one, and an endpoint that fails
``MAX_CONSECUTIVE_FAILURES`` times in a row is taken out of rotation (logged, and counted in
``stats()``, which the generate stage writes to its ``stats.json``).
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

import httpx

from llmdistill.backends import Backend, Completion, Prompt, Request, SamplingParams
from llmdistill.errors import UserError

log = logging.getLogger(__name__)
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class BackendError(UserError):
    """The endpoint kept failing after every retry, or refused the request outright."""


@dataclass
class Endpoint:
    url: str
    client: httpx.Client
    requests: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    in_rotation: bool = True


class OpenAIBackend(Backend):
    name = "openai"
    MAX_BACKOFF_S = 60.0
    MAX_CONSECUTIVE_FAILURES = 5  # then the endpoint leaves the rotation (while others remain)

    def __init__(
        self,
        model_name_or_path: str,
        base_url: str | list[str] = "http://127.0.0.1:8000/v1",
        api: str = "chat",
        api_key_env: str | None = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 6,
        backoff_s: float = 1.0,
    ):
        self.model_name = model_name_or_path
        self.supports_chat = api == "chat"
        self.api, self.concurrency, self.max_retries = api, concurrency, max_retries
        self.backoff_s = backoff_s
        key = os.environ.get(api_key_env) if api_key_env else None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise UserError("teacher.base_url is an empty list: give one endpoint or several")
        self.endpoints = [Endpoint(u.rstrip("/"), httpx.Client(base_url=u.rstrip("/"), headers=headers, timeout=timeout_s)) for u in urls]
        self.base_url = self.endpoints[0].url
        self._lock, self._next = threading.Lock(), 0

    def _pick(self, avoid: Endpoint | None = None) -> Endpoint:
        """The next endpoint in rotation (round robin over those still in it); a retry goes to
        another endpoint than the one that just failed it, when there is another."""
        with self._lock:
            live = [e for e in self.endpoints if e.in_rotation] or self.endpoints
            if avoid is not None and len(live) > 1:
                live = [e for e in live if e is not avoid]
            e = live[self._next % len(live)]
            self._next += 1
            e.requests += 1
            return e

    def _failed(self, e: Endpoint) -> None:
        with self._lock:
            e.failures += 1
            e.consecutive_failures += 1
            others = [x for x in self.endpoints if x.in_rotation and x is not e]
            if e.in_rotation and others and e.consecutive_failures >= self.MAX_CONSECUTIVE_FAILURES:
                e.in_rotation = False
                log.warning(
                    "%s failed %d times in a row: out of rotation (%d endpoint(s) left)", e.url, e.consecutive_failures, len(others)
                )

    def stats(self) -> dict:
        """Per endpoint: requests sent (retries included), failures, and whether it is still in rotation."""
        return {
            "endpoints": {e.url: {"requests": e.requests, "failures": e.failures, "in_rotation": e.in_rotation} for e in self.endpoints}
        }

    def prompt_text(self, prompt: Prompt) -> str:
        if isinstance(prompt, str):
            return prompt
        return "".join(f"<{m['role']}>\n{m['content']}\n" for m in prompt)

    def _body(self, request: Request, params: SamplingParams) -> dict:
        body = {
            "model": self.model_name,
            "n": params.n,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
            "seed": request.seed,
        }
        if params.stop:
            body["stop"] = params.stop[:4]  # the OpenAI API takes at most 4; the filter cuts at the rest
        if self.api == "chat":
            if isinstance(request.prompt, str):
                raise UserError("teacher.api is 'chat' but the prompt is plain text (set data.prompt_format: chat)")
            body["messages"] = request.prompt
            if params.logprobs:
                body |= {"logprobs": True, "top_logprobs": params.logprobs}
        else:
            if not isinstance(request.prompt, str):
                raise UserError("teacher.api is 'completions' but the prompt is chat messages (set data.prompt_format: completion)")
            body["prompt"] = request.prompt
            if params.logprobs:
                body["logprobs"] = params.logprobs
        return body

    def _post(self, body: dict, api: str | None = None) -> dict:
        """The reply to ``body``, checked by ``check_reply``; retryable failures are retried, each
        attempt on the next endpoint in rotation. ``api``: the endpoint, if not ``teacher.api``'s."""
        api = api or self.api
        path = "/chat/completions" if api == "chat" else "/completions"
        last, failed = "", None
        for attempt in range(self.max_retries + 1):
            wait = None
            e = self._pick(avoid=failed)
            try:
                resp = e.client.post(path, json=body)
                if resp.status_code == 200:
                    reply = check_reply(resp, body["n"], api)
                    if isinstance(reply, dict):
                        e.consecutive_failures = 0
                        return reply
                    last = reply
                else:
                    last = f"HTTP {resp.status_code}: {quote(resp.text)}"
                    if resp.status_code not in RETRY_STATUS:
                        raise BackendError(f"{e.url}{path} refused the request: {last}")
                    retry_after = resp.headers.get("retry-after")
                    wait = float(retry_after) if retry_after and retry_after.replace(".", "", 1).isdigit() else None
            except (httpx.TransportError, httpx.DecodingError) as err:  # timeouts, dropped connections, mangled bodies
                last = one_line(f"{type(err).__name__}: {err}")
            self._failed(e)
            failed = e
            if attempt == self.max_retries:
                break
            wait = wait if wait is not None else min(self.MAX_BACKOFF_S, self.backoff_s * 2**attempt) * (0.5 + random.random() / 2)
            log.warning("%s%s failed (%s); retry %d/%d in %.1fs", e.url, path, last, attempt + 1, self.max_retries, wait)
            time.sleep(wait)
        where = self.base_url if len(self.endpoints) == 1 else f"{e.url} (last of {len(self.endpoints)} endpoints)"
        raise BackendError(f"{where}{path} failed after {self.max_retries} retries: {last}")

    def served_model(self) -> str:
        """The name the server serves its (first) model under (``GET /models``)."""
        e = self._pick()
        try:
            resp = e.client.get("/models")
            resp.raise_for_status()
            return resp.json()["data"][0]["id"]
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as err:
            raise BackendError(f"{e.url}/models: no served model ({one_line(f'{type(err).__name__}: {err}')})") from None

    def prompt_logprobs(self, token_ids: list[int], top_k: int) -> list[dict[int, float] | None]:
        """The server's top-``top_k`` log-probabilities at every position of ``token_ids`` (vLLM's
        ``prompt_logprobs`` on the completions endpoint): entry ``j`` is the distribution that
        predicts token ``j`` from the tokens before it (``{id: logprob}``, by rank), entry 0 None.
        Retried and failing like every request of this backend."""
        body = {"model": self.model_name, "prompt": token_ids, "max_tokens": 1, "temperature": 0.0, "n": 1, "prompt_logprobs": top_k}
        choice = self._post(body, api="completions")["choices"][0]
        entries = choice.get("prompt_logprobs")
        if not isinstance(entries, list) or len(entries) != len(token_ids):
            got = "none" if not isinstance(entries, list) else f"{len(entries)} entries"
            raise BackendError(
                f"{self.base_url}/completions returned {got} of prompt_logprobs for {len(token_ids)} tokens (a vLLM server returns one per token)"
            )
        out: list[dict[int, float] | None] = []
        for entry in entries:
            if entry is None:
                out.append(None)
                continue
            ranked = sorted(
                ((v["rank"], int(t), float(v["logprob"])) for t, v in entry.items() if v.get("rank") is not None and v["rank"] <= top_k)
            )
            out.append({t: lp for _, t, lp in ranked})
        return out

    def _one(self, request: Request, params: SamplingParams) -> list[Completion]:
        t0 = time.perf_counter()
        data = self._post(self._body(request, params))
        latency = time.perf_counter() - t0
        raw_usage = data.get("usage")
        usage = raw_usage if isinstance(raw_usage, dict) else {}
        choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
        per_choice = (usage.get("completion_tokens") or 0) / max(len(choices), 1)
        out = []
        for c in choices:
            text = c["message"]["content"] if self.api == "chat" else c["text"]
            # vLLM's reasoning parsers (and other servers) return a reasoning model's thinking apart from the answer
            reasoning = (c["message"].get("reasoning_content") or c["message"].get("reasoning")) if self.api == "chat" else None
            top, n_tokens = _logprobs(c.get("logprobs"), self.api)
            out.append(
                Completion(
                    text=text or "",
                    finish_reason="length" if c.get("finish_reason") == "length" else "stop",
                    prompt_tokens=usage.get("prompt_tokens", 0),
                    completion_tokens=n_tokens or round(per_choice),
                    latency_s=latency,
                    top_logprobs=top if params.logprobs else None,
                    reasoning=reasoning if isinstance(reasoning, str) else None,
                )
            )
        return out

    def generate(self, requests: list[Request], params: SamplingParams) -> list[list[Completion]]:
        out: list[list[Completion] | None] = [None] * len(requests)
        for done in self.generate_each(requests, params):
            for i, completions in done.items():
                out[i] = completions
        return out  # type: ignore[return-value]

    def generate_each(self, requests: list[Request], params: SamplingParams) -> Iterator[dict[int, list[Completion]]]:
        """Each reply as it arrives. A request that fails for good stops new requests from being
        sent; those in flight are awaited and yielded (they are paid for), then the error is raised."""
        failure: BaseException | None = None
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = {pool.submit(self._one, r, params): i for i, r in enumerate(requests)}
            for future in as_completed(futures):
                if future.cancelled():
                    continue
                try:
                    result = future.result()
                except BaseException as e:  # the first failure ends the batch once the rest has landed
                    if failure is None:
                        failure = e
                        for f in futures:
                            f.cancel()  # not yet sent: never paid for
                    continue
                yield {futures[future]: result}
        if failure is not None:
            raise failure

    def close(self) -> None:
        for e in self.endpoints:
            e.client.close()


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) collapsed to one space."""
    return re.sub(r"\s+", " ", text).strip()


def quote(body: str) -> str:
    """The start of a reply body, quoted on one line, for errors and logs."""
    return repr(one_line(body)[:200])


def check_reply(resp: httpx.Response, n: int, api: str) -> dict | str:
    """The parsed reply of an HTTP 200 when it holds ``n`` usable choices, else why not.

    The one place a reply's shape is checked: a proxy's error page or a half-broken server
    gives a reason, which ``_post`` retries like a 5xx. A choice whose content is null is fine.
    """
    try:
        data = resp.json()
    except ValueError:  # not JSON, or not decodable text
        return f"HTTP 200 with a body that is not JSON: {quote(resp.text)}"
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list):
        return f"HTTP 200 with JSON that has no 'choices' list: {quote(resp.text)}"
    if len(choices) != n:
        return f"HTTP 200 with {len(choices)} choices where n={n} was asked: {quote(resp.text)}"
    if not all(usable_choice(c, api) for c in choices):
        field = "message" if api == "chat" else "text"
        return f"HTTP 200 with a choice that has no {field!r}: {quote(resp.text)}"
    return data


def usable_choice(choice, api: str) -> bool:
    """A chat choice has a ``message`` object, a completions one a ``text`` (null content is fine)."""
    if not isinstance(choice, dict):
        return False
    return isinstance(choice.get("message"), dict) if api == "chat" else "text" in choice


def _logprobs(lp: dict | None, api: str) -> tuple[list | None, int | None]:
    """Top-k lists per generated token from either API's logprobs shape, and the token count."""
    if not lp:
        return None, None
    if api == "chat":
        steps = lp.get("content") or []
        return [[[t["token"], t["logprob"]] for t in s.get("top_logprobs", [])] for s in steps], len(steps)
    steps = lp.get("top_logprobs") or []
    return [sorted(([tok, v] for tok, v in (s or {}).items()), key=lambda x: -x[1]) for s in steps], len(lp.get("tokens") or steps)
