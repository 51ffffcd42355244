"""OpenAIBackend against the local fake OpenAI server: retries, faults, streaming, stops, usage, secrets, routing.

Every call runs under asyncio.wait_for, so a hang fails the test instead of blocking the suite.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from sprint.backends.base import Backend, GenerationParams
from sprint.backends.openai_http import (BackendHTTPError, DeadlineExceededError, OpenAIBackend,
                                         RetriesExhaustedError, StreamInterruptedError)
from sprint.testing.fake_openai import FakeOpenAIServer, fake_tokens, request_text

TEXT = "The answer is 42 because six times seven is forty-two. STOP HERE and nothing after it."


def run(coro, timeout: float = 20.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def fast(url, **kw) -> OpenAIBackend:
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("timeout_s", 5.0)
    return OpenAIBackend(url, "fake-model", **kw)


def continuing(document: str):
    """A deterministic "model": the document continues whatever prefix of it the prompt holds."""
    def respond(body):
        prompt = request_text(body)
        assert document.startswith(prompt), "prompt is not a prefix of the document"
        return document[len(prompt):]
    return respond


async def collect_stream(backend, prompt, params):
    st = backend.stream(prompt, params)
    deltas = [d async for d in st]
    return deltas, st.completion


# ---------------------------------------------------------------------------------------------- basics
def test_generate_text_stop_and_usage():
    with FakeOpenAIServer(TEXT) as srv:
        b = fast(srv.base_url)
        assert isinstance(b, Backend)
        c = run(b.generate("Q: six times seven?", GenerationParams(max_tokens=100, stop=["STOP HERE"], seed=3)))
        assert c.text == "The answer is 42 because six times seven is forty-two. "
        assert c.finish_reason == "stop" and c.stop_string == "STOP HERE"
        # The server generated up to and including the token that completed the stop string.
        assert c.generated_tokens == len(fake_tokens(TEXT[:TEXT.index("HERE") + 4]))
        assert c.prompt_tokens == len(fake_tokens("Q: six times seven?"))
        assert not c.tokens_estimated
        assert c.ttft_s > 0 and c.decode_s >= 0
        body = srv.requests[0].body
        assert srv.requests[0].path == "/v1/completions"
        assert body["stop"] == ["STOP HERE"] and body["max_tokens"] == 100 and body["seed"] == 3
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}


def test_max_tokens_gives_length():
    with FakeOpenAIServer(TEXT) as srv:
        c = run(fast(srv.base_url).generate("p", GenerationParams(max_tokens=4)))
        assert c.text == "The answer is 42" and c.finish_reason == "length" and c.generated_tokens == 4


def test_non_streaming_mode_and_base_url_without_v1():
    with FakeOpenAIServer(TEXT) as srv:
        b = fast(f"http://127.0.0.1:{srv.port}", use_streaming=False)
        c = run(b.generate("p", GenerationParams(stop=["STOP"])))
        assert c.text.endswith("forty-two. ") and c.stop_string == "STOP" and not c.tokens_estimated
        assert "stream" not in srv.requests[0].body


def test_chat_endpoint():
    with FakeOpenAIServer(lambda body: f"you said {body['messages'][-1]['content']}") as srv:
        b = fast(srv.base_url, chat_max_tokens_field="max_completion_tokens")
        msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}]
        c = run(b.chat(msgs, GenerationParams(max_tokens=50)))
        assert c.text == "you said hello there" and c.generated_tokens == 4
        req = srv.requests[0]
        assert req.path == "/v1/chat/completions" and req.body["messages"] == msgs
        assert req.body["max_completion_tokens"] == 50
        with pytest.raises(ValueError, match="messages"):
            run(b.chat(["not a message"], GenerationParams()))


def test_usage_missing_is_estimated_and_flagged():
    with FakeOpenAIServer(TEXT, usage=False) as srv:
        b = fast(srv.base_url)
        c = run(b.generate("prompt text", GenerationParams()))
        assert c.text == TEXT and c.tokens_estimated
        assert c.generated_tokens == b.count_tokens(TEXT) and c.prompt_tokens == b.count_tokens("prompt text")


def test_client_enforces_stop_across_chunks_when_server_ignores_it():
    with FakeOpenAIServer(TEXT, honour_stop=False) as srv:
        b = fast(srv.base_url)
        deltas, comp = run(collect_stream(b, "p", GenerationParams(stop=["STOP HERE"])))
        # "STOP" and " HERE" arrive as two chunks; neither may be yielded.
        assert "".join(deltas) == "The answer is 42 because six times seven is forty-two. "
        assert not any("STOP" in d for d in deltas)
        assert comp.stop_string == "STOP HERE" and comp.finish_reason == "stop"


# ---------------------------------------------------------------------------------------------- faults
def test_500s_then_success():
    with FakeOpenAIServer(TEXT) as srv:
        srv.fail_next(2, status=500)
        c = run(fast(srv.base_url).generate("p", GenerationParams()))
        assert c.text == TEXT and len(srv.requests) == 3


def test_429_is_retried_after_retry_after():
    with FakeOpenAIServer(TEXT) as srv:
        srv.fail_next(1, status=429, body="slow down", retry_after=0.3)
        t0 = time.perf_counter()
        c = run(fast(srv.base_url).generate("p", GenerationParams()))
        assert c.text == TEXT and len(srv.requests) == 2
        assert time.perf_counter() - t0 >= 0.3


def test_400_is_not_retried_and_says_why():
    with FakeOpenAIServer(TEXT) as srv:
        srv.fail_next(1, status=400, body="max_tokens must be at least 1")
        with pytest.raises(BackendHTTPError) as ei:
            run(fast(srv.base_url).generate("p", GenerationParams()))
        assert ei.value.status == 400 and len(srv.requests) == 1
        assert "HTTP 400" in str(ei.value) and "max_tokens must be at least 1" in str(ei.value)
        assert "not retried" in str(ei.value)


def test_retries_are_bounded():
    with FakeOpenAIServer(TEXT) as srv:
        srv.fail_next(10, status=503, body="overloaded")
        with pytest.raises(RetriesExhaustedError, match="3 attempt.*HTTP 503.*overloaded"):
            run(fast(srv.base_url, max_retries=2).generate("p", GenerationParams()))
        assert len(srv.requests) == 3


def test_connection_refused_fails_clearly():
    with FakeOpenAIServer(TEXT) as srv:
        url = srv.base_url
    with pytest.raises(RetriesExhaustedError, match="cannot connect"):
        run(fast(url, max_retries=1).generate("p", GenerationParams()))


def test_dropped_before_reply_and_mid_stream_generate_restarts_cleanly():
    with FakeOpenAIServer(TEXT) as srv:
        srv.drop_next(1)                    # no reply at all
        srv.drop_next(1, after_chunks=3)    # three chunks, then the connection is cut
        c = run(fast(srv.base_url).generate("p", GenerationParams()))
        assert c.text == TEXT and not c.tokens_estimated   # restarted: no repeated text, usage of the good attempt
        assert [r.body["prompt"] for r in srv.requests] == ["p", "p", "p"]


def test_stream_resumes_after_drop_without_repeating_text():
    prompt = "Problem: compute. Solution:"
    answer = " first we add, then we multiply, and finally we get 42."
    with FakeOpenAIServer(continuing(prompt + answer)) as srv:
        srv.drop_next(1, after_chunks=4)
        deltas, comp = run(collect_stream(fast(srv.base_url), prompt, GenerationParams(max_tokens=100)))
        assert "".join(deltas) == answer
        partial = "".join(fake_tokens(answer)[:4])
        assert [r.body["prompt"] for r in srv.requests] == [prompt, prompt + partial]
        assert srv.requests[1].body["max_tokens"] < 100      # the remaining budget, not the full one again
        assert comp.text == answer and comp.tokens_estimated


def test_stream_drop_without_resume_raises():
    with FakeOpenAIServer(TEXT) as srv:
        srv.drop_next(1, after_chunks=4)
        with pytest.raises(StreamInterruptedError, match="resume_streams=False"):
            run(collect_stream(fast(srv.base_url, resume_streams=False), "p", GenerationParams()))


def test_stream_drop_before_first_text_restarts():
    with FakeOpenAIServer(TEXT) as srv:
        srv.drop_next(1, after_chunks=0)
        deltas, comp = run(collect_stream(fast(srv.base_url, resume_streams=False), "p", GenerationParams()))
        assert "".join(deltas) == TEXT and len(srv.requests) == 2 and not comp.tokens_estimated


def test_slow_response_times_out_with_clear_error_and_no_hang():
    with FakeOpenAIServer(TEXT) as srv:
        srv.delay_next(5, seconds=5.0)
        t0 = time.perf_counter()
        with pytest.raises(RetriesExhaustedError, match="read timeout.*0.3 s"):
            run(fast(srv.base_url, timeout_s=0.3, max_retries=1).generate("p", GenerationParams()), timeout=10)
        assert time.perf_counter() - t0 < 3.0


def test_one_slow_response_is_retried():
    with FakeOpenAIServer(TEXT) as srv:
        srv.delay_next(1, seconds=3.0)
        c = run(fast(srv.base_url, timeout_s=0.3).generate("p", GenerationParams()), timeout=10)
        assert c.text == TEXT and len(srv.requests) == 2


def test_wall_clock_deadline_on_a_trickling_stream():
    with FakeOpenAIServer(" word" * 200, chunk_delay_s=0.02) as srv:
        with pytest.raises(DeadlineExceededError, match="deadline of 0.3 s"):
            run(fast(srv.base_url, deadline_s=0.3).generate("p", GenerationParams()), timeout=10)


# ---------------------------------------------------------------------------------------------- limits, secrets
def test_concurrency_limit_and_parallel_calls():
    with FakeOpenAIServer(TEXT, delay_s=0.1) as srv:
        b = fast(srv.base_url, max_concurrency=3)

        async def many():
            return await asyncio.gather(*(b.generate(f"p{i}", GenerationParams()) for i in range(9)))

        out = run(many())
        assert [c.text for c in out] == [TEXT] * 9
        assert srv.max_active == 3


def test_backend_survives_several_event_loops():
    with FakeOpenAIServer(TEXT) as srv:
        b = fast(srv.base_url)
        for _ in range(2):
            assert run(b.generate("p", GenerationParams())).text == TEXT


def test_api_key_sent_but_never_exposed(monkeypatch, caplog):
    secret = "sk-test-very-secret-0123456789"
    monkeypatch.setenv("SPRINT_TEST_KEY", secret)
    caplog.set_level(logging.DEBUG)
    with FakeOpenAIServer(TEXT) as srv:
        b = fast(srv.base_url, api_key_env="SPRINT_TEST_KEY")
        srv.fail_next(1, status=500)
        c = run(b.generate("p", GenerationParams()))
        srv.fail_next(1, status=401, body="bad key")
        with pytest.raises(BackendHTTPError) as ei:
            run(b.generate("p", GenerationParams()))
        assert srv.requests[0].headers.get("Authorization") == f"Bearer {secret}"
    assert "attempt 1/5 failed" in caplog.text          # the retry was logged ...
    for place in (caplog.text, repr(b), str(vars(b)), repr(c), str(ei.value)):
        assert secret not in place                      # ... and the key appears nowhere


def test_no_key_no_header(monkeypatch):
    monkeypatch.delenv("SPRINT_TEST_KEY", raising=False)
    with FakeOpenAIServer(TEXT) as srv:
        run(fast(srv.base_url, api_key_env="SPRINT_TEST_KEY").generate("p", GenerationParams()))
        assert "Authorization" not in srv.requests[0].headers


# ---------------------------------------------------------------------------------------------- routing
SYSTEM = "You are a careful solver. " * 4


def question(i: int) -> str:
    return f"{SYSTEM}Question {i}: " + f"what is {i} plus {i}? " * 20


def test_prefix_affinity_across_two_servers():
    with FakeOpenAIServer(TEXT) as s1, FakeOpenAIServer(TEXT) as s2:
        b = fast([s1.base_url, s2.base_url])

        async def scenario():
            await b.generate(question(1), GenerationParams())
            await b.generate(question(2), GenerationParams())   # no shared prefix: the idle server
            # Executors of both questions, concurrently: each goes where its question's prefix is.
            return await asyncio.gather(*(b.generate(question(q) + f" Executor {j}: go.", GenerationParams())
                                          for q in (1, 2) for j in range(4)))

        executors = run(scenario())
        where = {srv.base_url: [request_text(r.body) for r in srv.requests] for srv in (s1, s2)}
        first = s1 if where[s1.base_url][0] == question(1) else s2
        other = s2 if first is s1 else s1
        assert all(p.startswith(question(1)) for p in where[first.base_url])
        assert all(p.startswith(question(2)) for p in where[other.base_url])
        assert len(first.requests) == len(other.requests) == 5
        # The fake server simulates a prefix cache: every executor found its question's tokens cached.
        assert all(c.cached_prompt_tokens >= len(fake_tokens(question(1))) - 1 for c in executors)


def test_load_balanced_without_shared_prefix_and_failover():
    with FakeOpenAIServer(TEXT, delay_s=0.05) as s1, FakeOpenAIServer(TEXT, delay_s=0.05) as s2:
        b = fast([s1.base_url, s2.base_url])

        async def burst():
            await asyncio.gather(*(b.generate(f"unrelated prompt {i} " * 10, GenerationParams()) for i in range(8)))

        run(burst())
        assert len(s1.requests) == len(s2.requests) == 4
        s1.fail_next(1, status=500)
        s2.fail_next(1, status=500)
        n1, n2 = len(s1.requests), len(s2.requests)
        c = run(b.generate(question(7), GenerationParams()))
        # The failed server is avoided on the retry: one failure on each, then success.
        assert c.text == TEXT and len(s1.requests) - n1 + len(s2.requests) - n2 == 3


def test_cached_prompt_tokens_reported_from_usage():
    with FakeOpenAIServer(TEXT) as srv:
        b = fast(srv.base_url)
        shared = question(3).rstrip()
        run(b.generate(shared, GenerationParams()))
        c = run(b.generate(shared + " Executor 1: go.", GenerationParams()))
        assert c.cached_prompt_tokens == len(fake_tokens(shared))
