"""One local OpenAI-compatible chat server that misbehaves on purpose, for the backend's unit tests
and the resume and fault tests (it also serves scripts/check_resume.py).

Replies: ``reply="echo"`` answers choice ``i`` with ``"sample {i} for {last user turn}"`` (with
logprobs, finish reasons stop then length, ``reasoning_content`` when asked); ``reply="answer"``
answers the last user turn's question (``answer_for``), so a test can check every stored
completion against its own prompt.

Failures, two ways:
- queued: each request pops ``faults`` (``None`` or an empty list: success). "500", "503", "429"
  (with Retry-After: 0), "400": that status; "slow": answers after ``hang_s``; "drop": closes the
  connection; "html", "notjson", "nochoices": HTTP 200 with that body (``bad_200``); "fewchoices",
  "manychoices": one choice fewer or more than asked; "nullcontent": null message content;
  "reasoning": the thinking in ``reasoning_content``;
- random: a share ``fault_rate`` of requests, drawn from a seeded RNG: 500, 429, 503, a hang past
  the client's timeout, or a dropped connection. A question containing one of ``fail_questions``
  fails every time (HTTP 500); ``html_after`` > 0 makes every request after that many answer 200
  with an HTML error page.

Bound to 127.0.0.1 only; stopped by ``close``.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RANDOM_FAULTS = ("500", "429", "503", "hang", "drop")
# HTTP 200 replies a proxy or a half-broken server sends instead of completions.
BAD_200 = {
    "html": ("text/html", b"<html>\n<head><title>502 Bad Gateway</title></head>\n<body>\n<h1>502 Bad Gateway</h1>\n</body>\n</html>\n"),
    "notjson": ("text/plain", b"upstream connect error or disconnect/reset before headers. reset reason: overflow"),
    "nochoices": ("application/json", b'{"error": {"message": "The model is overloaded", "type": "server_error"}}'),
}


def answer_for(question: str) -> str:
    """The completion ``reply="answer"`` writes for a question: it names the question, then answers."""
    numbers = [int(x) for x in re.findall(r"\d+", question)]
    return f"About '{question}': {' + '.join(map(str, numbers))} = {sum(numbers)}. The answer is {sum(numbers)}."


class FakeOpenAIServer:
    def __init__(
        self,
        reply: str = "echo",
        fault_rate: float = 0.0,
        latency_s: float = 0.0,
        hang_s: float = 1.0,
        seed: int = 0,
        html_after: int = 0,
        fail_questions: tuple[str, ...] = (),
    ):
        self.reply, self.fault_rate, self.latency_s, self.hang_s = reply, fault_rate, latency_s, hang_s
        self.html_after, self.fail_questions = html_after, fail_questions
        self.faults: list[str | None] = []
        self.bad_200 = dict(BAD_200)  # a test may change one page
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.requests, self.injected, self.auth = 0, {f: 0 for f in RANDOM_FAULTS}, set()
        self.rng, self.lock = random.Random(seed), threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.requests += 1
                    n = outer.requests
                    outer.bodies.append(body)
                    outer.headers.append(dict(self.headers))
                    outer.auth.add(self.headers.get("Authorization", ""))
                    fault = outer.faults.pop(0) if outer.faults else None
                    if fault is None and outer.fault_rate and outer.rng.random() < outer.fault_rate:
                        fault = outer.rng.choice(RANDOM_FAULTS)
                        outer.injected[fault] += 1
                last = body["messages"][-1]["content"]
                if any(q in last for q in outer.fail_questions):
                    fault = "500"
                if outer.html_after and n > outer.html_after:
                    fault = "html"
                if fault in ("hang", "slow"):
                    time.sleep(outer.hang_s)
                    if fault == "hang":
                        return
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if fault in ("500", "503", "429", "400"):
                    page = b"<html>\n<body>Service Unavailable</body>\n</html>" if fault == "503" else b'{"error": {"message": "injected"}}'
                    return self._send(
                        int(fault),
                        page,
                        "text/html" if fault == "503" else "application/json",
                        {"Retry-After": "0"} if fault == "429" else None,
                    )
                if fault in outer.bad_200:
                    kind, page = outer.bad_200[fault]
                    return self._send(200, page, kind)
                time.sleep(outer.latency_s)
                choices = outer.choices(body, fault)
                data = json.dumps({"choices": choices, "usage": {"prompt_tokens": 11, "completion_tokens": 3 * len(choices)}}).encode()
                self._send(200, data, "application/json")

            def _send(self, status: int, data: bytes, kind: str, headers: dict | None = None):
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.handle_error = lambda request, address: None  # clients that time out leave broken pipes: expected here
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def choices(self, body: dict, fault: str | None) -> list[dict]:
        last = body["messages"][-1]["content"]
        n = body.get("n", 1) + {"fewchoices": -1, "manychoices": 1}.get(fault or "", 0)
        if self.reply == "answer":
            text = answer_for(last.rsplit("Q: ", 1)[-1].strip())
            return [{"index": i, "finish_reason": "stop", "message": {"role": "assistant", "content": text}} for i in range(n)]
        top = [{"token": "a", "logprob": -0.1, "top_logprobs": [{"token": "a", "logprob": -0.1}, {"token": "b", "logprob": -2.5}]}]
        return [
            {
                "index": i,
                "finish_reason": "length" if i else "stop",
                "logprobs": {"content": top},
                "message": {
                    "role": "assistant",
                    "content": None if fault == "nullcontent" else f"sample {i} for {last}",
                    **({"reasoning_content": f"thinking {i}"} if fault == "reasoning" else {}),
                },
            }
            for i in range(n)
        ]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
