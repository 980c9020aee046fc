"""The OpenAI-compatible backend against a local fake server that injects failures (tests/fake_openai.py)."""

import httpx
import pytest

from llmdistill.backends import Request, SamplingParams
from llmdistill.backends.openai import BackendError, OpenAIBackend, check_reply
from tests.fake_openai import FakeOpenAIServer


@pytest.fixture
def server():
    s = FakeOpenAIServer(hang_s=4.0)  # "slow" answers well past the client's timeout, whatever the load
    yield s
    s.httpd.shutdown()


def backend(server, **kw):
    # a healthy reply comes in milliseconds; 1 s leaves room for a loaded CI machine (a 0.3 s timeout once flaked)
    return OpenAIBackend("teacher-x", base_url=server.url, timeout_s=1.0, backoff_s=0.01, **kw)


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


BAD_REPLIES = ["html", "notjson", "nochoices", "fewchoices", "manychoices", "drop", "503", "slow"]


@pytest.mark.parametrize("fault", BAD_REPLIES)
def test_each_bad_reply_is_retried_then_succeeds(server, fault, caplog):
    server.faults = [fault]
    with caplog.at_level("WARNING"):
        [[a, b]] = backend(server).generate(REQ, SamplingParams(n=2))
    assert a.text == "sample 0 for Q: one?" and b.text == "sample 1 for Q: one?" and len(server.bodies) == 2
    assert "retry 1/6" in caplog.text  # logged like any retried failure


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (
            "html",
            "HTTP 200 with a body that is not JSON: '<html> <head><title>502 Bad Gateway</title></head> <body> <h1>502 Bad Gateway</h1>",
        ),
        ("notjson", "HTTP 200 with a body that is not JSON: 'upstream connect error or disconnect/reset before headers."),
        ("nochoices", """HTTP 200 with JSON that has no 'choices' list: '{"error": {"message": "The model is overloaded", """),
        ("fewchoices", """HTTP 200 with 1 choices where n=2 was asked: '{"choices": [{"index": 0, """),
        ("manychoices", """HTTP 200 with 3 choices where n=2 was asked: '{"choices": [{"index": 0, """),
        ("503", "HTTP 503: '<html> <body>Service Unavailable</body> </html>'"),
        ("drop", "RemoteProtocolError: Server disconnected without sending a response."),
        ("slow", "ReadTimeout"),
    ],
)
def test_a_bad_reply_past_the_retry_budget_is_one_line_quoting_the_body(server, fault, reason, caplog):
    server.faults = [fault] * 10
    with caplog.at_level("WARNING"), pytest.raises(BackendError) as err:
        backend(server, max_retries=2).generate(REQ, SamplingParams(n=2))
    message = str(err.value)
    assert "\n" not in message and len(server.bodies) == 3
    assert message.startswith(f"{server.url}/chat/completions failed after 2 retries: ") and reason in message, message
    assert reason in caplog.text and "retry 2/2" in caplog.text


def test_a_long_bad_body_is_quoted_up_to_200_characters(server):
    server.faults = ["html"] * 3
    server.bad_200["html"] = ("text/html", b"<html>" + b"x" * 1000)
    with pytest.raises(BackendError) as err:
        backend(server, max_retries=2).generate(REQ, SamplingParams())
    assert str(err.value).endswith("'<html>" + "x" * 194 + "'")


def test_null_content_is_empty_text(server):
    server.faults = ["nullcontent"]
    [[a]] = backend(server).generate(REQ, SamplingParams())
    assert a.text == "" and len(server.bodies) == 1


def test_check_reply_names_what_is_wrong_with_a_completions_reply():
    ok = httpx.Response(200, json={"choices": [{"index": 0, "text": None}]})
    assert check_reply(ok, 1, "completions") == {"choices": [{"index": 0, "text": None}]}
    chat_shaped = httpx.Response(200, json={"choices": [{"index": 0, "message": {"content": "hi"}}]})
    assert check_reply(chat_shaped, 1, "completions").startswith("HTTP 200 with a choice that has no 'text': '{")
    assert check_reply(httpx.Response(200, content=b"[1, 2]"), 1, "chat") == "HTTP 200 with JSON that has no 'choices' list: '[1, 2]'"
    assert check_reply(httpx.Response(200, content=b""), 1, "chat") == "HTTP 200 with a body that is not JSON: ''"


def test_a_reasoning_models_thinking_is_kept_apart(server):
    """vLLM's reasoning parsers return the thinking as message.reasoning_content, apart from the answer."""
    server.faults = ["reasoning"]
    [[a, b]] = backend(server).generate(REQ, SamplingParams(n=2, temperature=0.7))
    assert (a.reasoning, b.reasoning) == ("thinking 0", "thinking 1") and a.text == "sample 0 for Q: one?"
    [[plain]] = backend(server).generate(REQ, SamplingParams())
    assert plain.reasoning is None


def test_requests_rotate_over_several_endpoints_and_a_failing_one_leaves_the_rotation(caplog):
    """Two replicas, one failing every request: every request still succeeds (its retry goes to the
    healthy one), the failing one is taken out of rotation after MAX_CONSECUTIVE_FAILURES, and the
    per-endpoint counts say so."""
    healthy, broken = FakeOpenAIServer(), FakeOpenAIServer()
    broken.faults = ["500"] * 1000
    try:
        b = OpenAIBackend("teacher-x", base_url=[broken.url, healthy.url], timeout_s=5.0, backoff_s=0.0, concurrency=1)
        reqs = [Request(id=f"p{i}", index=i, prompt=[{"role": "user", "content": f"Q: {i}?"}], seed=i) for i in range(20)]
        out = b.generate(reqs, SamplingParams(n=1, max_new_tokens=8))
        assert [o[0].text for o in out] == [f"sample 0 for Q: {i}?" for i in range(20)]
        stats = b.stats()["endpoints"]
        assert stats[broken.url] == {
            "requests": OpenAIBackend.MAX_CONSECUTIVE_FAILURES,
            "failures": OpenAIBackend.MAX_CONSECUTIVE_FAILURES,
            "in_rotation": False,
        }
        assert stats[healthy.url]["failures"] == 0 and stats[healthy.url]["requests"] == 20
        assert "out of rotation" in caplog.text
    finally:
        healthy.httpd.shutdown()
        broken.httpd.shutdown()


def test_half_failing_endpoint_beside_a_healthy_one_completes_the_run():
    """The issue's case: one endpoint failing half its requests, one healthy: the run completes,
    load is spread, and the failures are counted."""
    healthy, flaky = FakeOpenAIServer(), FakeOpenAIServer()
    flaky.faults = ["503", None] * 50
    try:
        b = OpenAIBackend("teacher-x", base_url=[flaky.url, healthy.url], timeout_s=5.0, backoff_s=0.0, concurrency=4)
        reqs = [Request(id=f"p{i}", index=i, prompt=[{"role": "user", "content": f"Q: {i}?"}], seed=i) for i in range(30)]
        out = b.generate(reqs, SamplingParams(n=2, max_new_tokens=8))
        assert all(len(o) == 2 for o in out) and out[7][1].text == "sample 1 for Q: 7?"
        stats = b.stats()["endpoints"]
        assert stats[flaky.url]["failures"] > 0 and stats[healthy.url]["failures"] == 0
        assert stats[flaky.url]["requests"] > stats[flaky.url]["failures"] and stats[healthy.url]["requests"] >= 15
    finally:
        healthy.httpd.shutdown()
        flaky.httpd.shutdown()
