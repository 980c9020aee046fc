"""A local OpenAI-compatible chat server that misbehaves on purpose, for resume and fault tests.

Each reply answers the last user turn's question (so a test can check every stored completion
against its own prompt) after ``latency_s``. A share ``fault_rate`` of requests, drawn from a
seeded RNG, fails instead: HTTP 500, 429 with Retry-After, 503, a hang past the client's timeout,
or a dropped connection; a question containing one of ``fail_questions`` fails every time. ``html_after`` > 0 makes every request after that many answer 200 with an
HTML error page. Bound to 127.0.0.1 only; stopped by ``close``.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = ("500", "429", "503", "hang", "drop")


def answer_for(question: str) -> str:
    """The completion the server writes for a question: it names the question, then answers."""
    numbers = [int(x) for x in re.findall(r"\d+", question)]
    return f"About '{question}': {' + '.join(map(str, numbers))} = {sum(numbers)}. The answer is {sum(numbers)}."


class ChaosServer:
    def __init__(self, fault_rate: float = 0.0, latency_s: float = 0.0, hang_s: float = 1.0, seed: int = 0, html_after: int = 0,
                 fail_questions: tuple[str, ...] = ()):
        self.fault_rate, self.latency_s, self.hang_s, self.html_after = fault_rate, latency_s, hang_s, html_after
        self.fail_questions = fail_questions  # a question containing one of these always gets HTTP 500
        self.rng, self.lock = random.Random(seed), threading.Lock()
        self.requests, self.faults, self.auth = 0, {f: 0 for f in FAULTS}, set()
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
                    fault = outer.rng.choice(FAULTS) if outer.rng.random() < outer.fault_rate else None
                    if fault:
                        outer.faults[fault] += 1
                    outer.auth.add(self.headers.get("Authorization", ""))
                if outer.html_after and n > outer.html_after:
                    return self._send(200, b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>", "text/html")
                if any(q in body["messages"][-1]["content"] for q in outer.fail_questions):
                    fault = "500"
                if fault == "hang":
                    time.sleep(outer.hang_s)
                    return
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if fault:
                    headers = {"Retry-After": "0"} if fault == "429" else {}
                    return self._send(int(fault), b'{"error": {"message": "injected"}}', "application/json", headers)
                time.sleep(outer.latency_s)
                question = body["messages"][-1]["content"].rsplit("Q: ", 1)[-1].strip()
                choices = [{"index": i, "finish_reason": "stop", "message": {"role": "assistant", "content": answer_for(question)}}
                           for i in range(body.get("n", 1))]
                data = json.dumps({"choices": choices, "usage": {"prompt_tokens": 50, "completion_tokens": 20 * len(choices)}}).encode()
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
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
