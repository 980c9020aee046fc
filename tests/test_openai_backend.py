"""The OpenAI-compatible backend against a local fake server that injects failures."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llmdistill.backends import Request, SamplingParams
from llmdistill.backends.openai import BackendError, OpenAIBackend


class FakeServer:
    """Answers POSTs by popping ``faults`` ("500", "429", "slow", "400"); an empty list means success."""

    def __init__(self):
        self.faults: list[str] = []
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.bodies.append(body)
                outer.headers.append(dict(self.headers))
                fault = outer.faults.pop(0) if outer.faults else None
                if fault == "slow":
                    time.sleep(0.6)
                if fault in ("500", "429", "400"):
                    self.send_response(int(fault))
                    if fault == "429":
                        self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(b'{"error": "injected"}')
                    return
                choices = [
                    {"index": i, "finish_reason": "length" if i else "stop",
                     "message": {"role": "assistant", "content": f"sample {i} for {body['messages'][-1]['content']}"},
                     "logprobs": {"content": [{"token": "a", "logprob": -0.1, "top_logprobs": [{"token": "a", "logprob": -0.1}, {"token": "b", "logprob": -2.5}]}]}}
                    for i in range(body.get("n", 1))
                ]
                data = json.dumps({"choices": choices, "usage": {"prompt_tokens": 11, "completion_tokens": 3 * len(choices)}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server():
    s = FakeServer()
    yield s
    s.httpd.shutdown()


def backend(server, **kw):
    return OpenAIBackend("teacher-x", base_url=server.url, timeout_s=0.3, backoff_s=0.01, **kw)


REQ = [Request(id="p1", index=0, prompt=[{"role": "user", "content": "Q: one?"}], seed=5)]


def test_success_returns_n_samples_with_finish_reasons_and_logprobs(server):
    [[a, b]] = backend(server).generate(REQ, SamplingParams(n=2, temperature=0.7, max_new_tokens=9, stop=["\nQ:"], logprobs=2))
    assert a.text == "sample 0 for Q: one?" and a.finish_reason == "stop" and b.finish_reason == "length"
    assert a.prompt_tokens == 11 and a.completion_tokens == 1 and a.top_logprobs == [[["a", -0.1], ["b", -2.5]]]
    sent = server.bodies[0]
    assert sent["n"] == 2 and sent["max_tokens"] == 9 and sent["seed"] == 5 and sent["stop"] == ["\nQ:"] and sent["top_logprobs"] == 2


def test_retries_500_429_and_timeouts_then_succeeds(server):
    server.faults = ["500", "429", "slow", "500"]
    [[c]] = backend(server, max_retries=4).generate(REQ, SamplingParams())
    assert c.text.startswith("sample 0") and len(server.bodies) == 5


def test_gives_up_after_the_retry_budget_with_the_last_error(server):
    server.faults = ["500"] * 10
    with pytest.raises(BackendError, match=r"failed after 2 retries: HTTP 500"):
        backend(server, max_retries=2).generate(REQ, SamplingParams())
    assert len(server.bodies) == 3


def test_client_errors_are_not_retried(server):
    server.faults = ["400"]
    with pytest.raises(BackendError, match="refused the request: HTTP 400"):
        backend(server).generate(REQ, SamplingParams())
    assert len(server.bodies) == 1


def test_unreachable_server_fails_clearly():
    b = OpenAIBackend("m", base_url="http://127.0.0.1:9/v1", timeout_s=0.2, backoff_s=0.01, max_retries=1)
    with pytest.raises(BackendError, match="failed after 1 retries: ConnectError"):
        b.generate(REQ, SamplingParams())


def test_api_key_comes_from_the_named_variable_and_is_never_logged(server, monkeypatch, caplog):
    monkeypatch.setenv("MY_TEACHER_KEY", "sk-secret-123")
    server.faults = ["500"]
    with caplog.at_level("DEBUG"):
        backend(server, api_key_env="MY_TEACHER_KEY").generate(REQ, SamplingParams())
    assert server.headers[-1]["Authorization"] == "Bearer sk-secret-123"
    assert "sk-secret-123" not in caplog.text and "retry 1/6" in caplog.text


def test_concurrency_keeps_request_order(server):
    reqs = [Request(id=f"p{i}", index=i, prompt=[{"role": "user", "content": f"Q: {i}?"}]) for i in range(12)]
    out = backend(server, concurrency=4).generate(reqs, SamplingParams())
    assert [o[0].text for o in out] == [f"sample 0 for Q: {i}?" for i in range(12)]
