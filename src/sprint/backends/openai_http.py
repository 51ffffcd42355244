"""The OpenAI-compatible HTTP backend: vLLM, SGLang or any server speaking /v1/completions and /v1/chat/completions.

What it owns:
- Requests: the completions endpoint for `generate` / `stream` (the orchestrator sends exact prompt text, so no chat
  template is applied by the server), the chat endpoint for `chat` (used by curation to call an LLM).
- Limits and failures: at most `max_concurrency` requests in flight; a read timeout (`timeout_s` without a byte from
  the server) and an optional wall-clock `deadline_s` per call; bounded retries with exponential backoff and jitter on
  connection errors, timeouts, dropped streams, 429 and 5xx (honouring Retry-After); other 4xx fail at once with the
  status and an excerpt of the server's message.
- Broken streams: `generate` and `chat` restart a broken request from scratch (their caller has seen nothing yet).
  `stream` restarts from scratch if it has yielded nothing; once it has yielded text it continues from where it was
  (the prompt plus the text received so far, with the remaining token budget), so no text is ever repeated; with
  `resume_streams=False` it raises `StreamInterruptedError` instead.
- Token counts from the server's `usage` (streaming asks for `stream_options.include_usage`); when a server sends none
  the counts are estimated with `count_tokens` and the Completion says so (`tokens_estimated=True`).
- Stop strings are sent to the server and also enforced here, so a server that ignores them cannot leak them.
- Several servers: `PrefixRouter` sends a prompt to the server that recently served the longest prefix of it (where
  that server's prefix cache most likely still holds the KV), and otherwise to the server with the fewest requests
  in flight.
- The API key is read from the environment variable named by `api_key_env` at each request; it is never stored on
  the object, logged, or put in a result or an error message.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import random
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Sequence

import httpx

from sprint.backends.base import BackendError, Completion, CompletionStream, GenerationParams
from sprint.backends.stops import StopScanner

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- errors
class BackendHTTPError(BackendError):
    """The server answered with an HTTP error status."""

    def __init__(self, status: int, url: str, excerpt: str, retryable: bool, retry_after: float | None = None):
        self.status, self.url, self.excerpt, self.retryable, self.retry_after = status, url, excerpt, retryable, \
            retry_after
        why = "" if retryable else " (client error, not retried)"
        super().__init__(f"HTTP {status} from {url}{why}: {excerpt}")


class RetriesExhaustedError(BackendError):
    """Every attempt failed with a retryable error."""


class StreamInterruptedError(BackendError):
    """A stream broke after text had already been yielded and resuming was not allowed."""


class DeadlineExceededError(BackendError):
    """A call ran past its wall-clock deadline."""


class _Retryable(Exception):
    """Internal: one attempt failed in a way worth retrying (wraps the cause, keeps a readable reason)."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason, self.retry_after = reason, retry_after


def _excerpt(raw: bytes | str, limit: int = 300) -> str:
    """The server's error message: `error.message` of an OpenAI-style body, else the start of the body."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        obj = json.loads(text)
        err = obj.get("error", obj) if isinstance(obj, dict) else obj
        msg = err.get("message") if isinstance(err, dict) else None
        if msg:
            text = str(msg)
    text = " ".join(text.split())
    return text[:limit] + ("..." if len(text) > limit else "")


def _retry_after(headers: httpx.Headers) -> float | None:
    with contextlib.suppress(TypeError, ValueError):
        return max(0.0, float(headers.get("retry-after")))
    return None


def _transport_reason(e: httpx.TransportError, url: str, timeout_s: float) -> str:
    if isinstance(e, httpx.TimeoutException):
        kind = "connect" if isinstance(e, httpx.ConnectTimeout) else "read" if isinstance(e, httpx.ReadTimeout) \
            else "pool" if isinstance(e, httpx.PoolTimeout) else "write"
        return f"{kind} timeout: no answer from {url} within {timeout_s:g} s"
    if isinstance(e, httpx.ConnectError):
        return f"cannot connect to {url}: {e}"
    return f"connection to {url} broke: {type(e).__name__}: {e}"


# ---------------------------------------------------------------------------------------------- routing
@dataclass
class ServerState:
    """One server of the pool: its address, load and a bounded memory of the prompt prefixes sent to it."""

    url: str
    in_flight: int = 0
    served: int = 0
    prefixes: "OrderedDict[bytes, None]" = field(default_factory=OrderedDict)


class PrefixRouter:
    """Chooses a server per prompt: the one that served the longest prefix of it recently, else the least busy.

    A prompt is cut into `block_chars`-character blocks; the key of block k is a hash of the prompt up to the end of
    block k (computed incrementally), so two prompts share the first m keys exactly when their first m blocks are
    equal. Each server keeps the keys of recent prompts in an LRU of `capacity` keys, standing in for its KV prefix
    cache. Affinity is used when the match covers at least `min_match_fraction` of the prompt (a shared system prompt
    alone should not pin every question to one server) and the preferred server has at most `balance_slack` more
    requests in flight than the least busy one (cache hits are not worth a long queue), as SGLang's router does.
    """

    def __init__(self, urls: Sequence[str], *, block_chars: int = 64, capacity: int = 65536,
                 min_match_fraction: float = 0.5, balance_slack: int = 8):
        if not urls:
            raise ValueError("base_url: at least one server URL is required")
        self.servers = [ServerState(u) for u in urls]
        self.block_chars, self.capacity = block_chars, capacity
        self.min_match_fraction, self.balance_slack = min_match_fraction, balance_slack

    def keys(self, prompt: str) -> list[bytes]:
        h = hashlib.blake2b(digest_size=8)
        out = []
        for k in range(0, len(prompt) - self.block_chars + 1, self.block_chars):
            h.update(prompt[k:k + self.block_chars].encode("utf-8", "surrogatepass"))
            out.append(h.copy().digest())
        return out

    @staticmethod
    def _matched(server: ServerState, keys: list[bytes]) -> int:
        n = 0
        for key in keys:
            if key not in server.prefixes:
                break
            n += 1
        return n

    def choose(self, prompt: str, avoid: set[str] = frozenset()) -> ServerState:
        """Pick a server for `prompt` (not one in `avoid` when there is another) and remember the prefix there."""
        pool = [s for s in self.servers if s.url not in avoid] or self.servers
        least = min(pool, key=lambda s: (s.in_flight, s.served))
        keys = self.keys(prompt)
        chosen = least
        if keys and len(pool) > 1:
            best, matched = max(((s, self._matched(s, keys)) for s in pool), key=lambda t: (t[1], -t[0].in_flight))
            if matched and matched * self.block_chars >= self.min_match_fraction * len(prompt) \
                    and best.in_flight - least.in_flight <= self.balance_slack:
                chosen = best
        for key in keys:
            chosen.prefixes[key] = None
            chosen.prefixes.move_to_end(key)
        while len(chosen.prefixes) > self.capacity:
            chosen.prefixes.popitem(last=False)
        return chosen


# ---------------------------------------------------------------------------------------------- backend
@dataclass
class _LoopState:
    client: httpx.AsyncClient
    slots: asyncio.Semaphore


@dataclass
class _Attempt:
    """What one request attempt delivered besides text."""

    finish: str | None = None
    stop_reason: str | None = None
    usage: dict | None = None
    chunks: int = 0


def _normalize_url(url: str) -> str:
    url = url.rstrip("/")
    if httpx.URL(url).path in ("", "/"):
        url += "/v1"   # "http://host:8000" means the server's OpenAI routes under /v1, as vLLM and SGLang serve them
    return url


class OpenAIBackend:
    """Backend for OpenAI-compatible servers (vLLM, SGLang, ...): completions for generate/stream, chat for chat."""

    def __init__(self, base_url: str | Sequence[str], model: str, *, api_key_env: str = "OPENAI_API_KEY",
                 max_concurrency: int = 64, timeout_s: float = 600.0, connect_timeout_s: float = 10.0,
                 max_retries: int = 4, backoff_s: float = 0.5, max_backoff_s: float = 20.0,
                 deadline_s: float | None = None, resume_streams: bool = True, use_streaming: bool = True,
                 tokenizer: Any = None, extra_body: dict | None = None, chat_max_tokens_field: str = "max_tokens",
                 router: PrefixRouter | None = None, seed: int | None = None):
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        self.base_urls = [_normalize_url(u) for u in urls]
        if not model:
            raise ValueError("model: the served model's name is required (as the server knows it)")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency: must be >= 1, got {max_concurrency}")
        self.model = model
        self.api_key_env = api_key_env
        self.max_concurrency = max_concurrency
        self.timeout_s, self.connect_timeout_s = timeout_s, connect_timeout_s
        self.max_retries, self.backoff_s, self.max_backoff_s = max_retries, backoff_s, max_backoff_s
        self.deadline_s = deadline_s
        self.resume_streams = resume_streams
        self.use_streaming = use_streaming
        self.extra_body = dict(extra_body or {})
        self.chat_max_tokens_field = chat_max_tokens_field
        self.router = router or PrefixRouter(self.base_urls)
        self._tokenizer = tokenizer
        self._rng = random.Random(seed)
        self._loops: dict[asyncio.AbstractEventLoop, _LoopState] = {}

    def __repr__(self) -> str:
        return (f"OpenAIBackend(base_urls={self.base_urls!r}, model={self.model!r}, "
                f"api_key_env={self.api_key_env!r}, max_concurrency={self.max_concurrency})")

    # ------------------------------------------------------------------------------------------ tokens
    @property
    def token_counts_estimated(self) -> bool:
        """True when `count_tokens` estimates (no tokenizer was given)."""
        return self._tokenizer is None

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` under the given tokenizer; without one, an estimate of one token per 4 characters."""
        if not text:
            return 0
        tok = self._tokenizer
        if tok is None:
            return max(1, math.ceil(len(text) / 4))
        if isinstance(tok, str):
            from transformers import AutoTokenizer  # heavy import: only when a tokenizer is named

            tok = self._tokenizer = AutoTokenizer.from_pretrained(tok)
        if hasattr(tok, "encode"):
            return len(tok.encode(text, add_special_tokens=False))
        return int(tok(text))

    # ------------------------------------------------------------------------------------------ connections
    def _state(self) -> _LoopState:
        # httpx clients and asyncio semaphores belong to one event loop; keep one per loop (tests run several).
        loop = asyncio.get_running_loop()
        st = self._loops.get(loop)
        if st is None:
            for old in [lp for lp in self._loops if lp.is_closed()]:
                del self._loops[old]
            timeout = httpx.Timeout(self.timeout_s, connect=min(self.connect_timeout_s, self.timeout_s))
            limits = httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
            st = self._loops[loop] = _LoopState(httpx.AsyncClient(timeout=timeout, limits=limits),
                                                asyncio.Semaphore(self.max_concurrency))
        return st

    async def aclose(self) -> None:
        """Close this event loop's connections."""
        st = self._loops.pop(asyncio.get_running_loop(), None)
        if st is not None:
            await st.client.aclose()

    async def __aenter__(self) -> "OpenAIBackend":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        return {"Authorization": f"Bearer {key}"} if key else {}

    # ------------------------------------------------------------------------------------------ public API
    async def generate(self, prompt: str, params: GenerationParams) -> Completion:
        """Complete `prompt` (completions endpoint); a broken attempt is restarted from scratch."""
        return await self._collect("completions", {"prompt": prompt}, prompt, params)

    async def chat(self, messages: list[dict], params: GenerationParams) -> Completion:
        """Answer a chat (chat completions endpoint; the server applies the model's chat template)."""
        if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
            raise ValueError("messages: expected a list of {'role': ..., 'content': ...} dicts")
        route = "\n".join(str(m.get("content", "")) for m in messages)
        return await self._collect("chat", {"messages": messages}, route, params)

    def stream(self, prompt: str, params: GenerationParams) -> CompletionStream:
        """Yield text deltas of completing `prompt`; `.completion` is set when the stream ends."""
        return CompletionStream(lambda cs: self._run(cs, "completions", {"prompt": prompt}, prompt, params,
                                                     collect=False))

    async def _collect(self, kind: str, fields: dict, route: str, params: GenerationParams) -> Completion:
        cs = CompletionStream(lambda cs: self._run(cs, kind, fields, route, params, collect=True))
        async for _ in cs:
            pass
        assert cs.completion is not None
        return cs.completion

    # ------------------------------------------------------------------------------------------ the call
    def _body(self, kind: str, fields: dict, params: GenerationParams, max_tokens: int, stream: bool) -> dict:
        body: dict[str, Any] = {"model": self.model, **fields, "temperature": params.temperature,
                                "top_p": params.top_p}
        body["max_tokens" if kind == "completions" else self.chat_max_tokens_field] = max_tokens
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        body.update(self.extra_body)
        return body

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
        delay *= self._rng.uniform(0.5, 1.0)   # jitter: retries of many concurrent calls do not arrive together
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_backoff_s))
        return delay

    async def _run(self, cs: CompletionStream, kind: str, fields: dict, route: str, params: GenerationParams,
                   collect: bool) -> AsyncIterator[str]:
        """The whole call: attempts, retries, resumption; yields deltas (none when `collect`), sets cs.completion."""
        start = time.perf_counter()
        scanner = StopScanner(params.stop)
        first: float | None = None
        attempts = 0
        resumed = False
        kept_tokens = 0              # tokens of broken attempts whose text was kept (stream resumption)
        avoid: set[str] = set()
        info = _Attempt()
        while True:
            attempts += 1
            call_fields = dict(fields)
            if scanner.emitted and not collect:
                # Text was yielded already: continue after it rather than repeat it.
                resumed = True
                call_fields["prompt"] = fields["prompt"] + scanner.text
            else:
                scanner, first, kept_tokens = StopScanner(params.stop), None, 0
            info = _Attempt()
            state = self._state()
            server: ServerState | None = None
            try:
                async with state.slots:
                    server = self.router.choose(route, avoid)
                    server.in_flight += 1
                    try:
                        pieces = self._attempt(state, server, kind, call_fields, params,
                                               params.max_tokens - kept_tokens, info)
                        async with contextlib.aclosing(pieces):
                            async for delta in pieces:
                                if delta and first is None:
                                    first = time.perf_counter()
                                out = scanner.feed(delta)
                                if out and not collect:
                                    yield out
                                if scanner.hit is not None:
                                    break   # the server ignored a stop string: the rest is not wanted
                                self._check_deadline(start)
                    finally:
                        server.in_flight -= 1
                    server.served += 1
                break
            except _Retryable as e:
                log.warning("%s: attempt %d/%d failed: %s", self.model, attempts, self.max_retries + 1, e.reason)
                if scanner.emitted and not collect and not self.resume_streams:
                    raise StreamInterruptedError(
                        f"stream broke after {scanner.emitted} characters had been yielded ({e.reason}); not "
                        f"resumed because resume_streams=False") from None
                if attempts > self.max_retries:
                    raise RetriesExhaustedError(
                        f"gave up after {attempts} attempt(s) ({self.model} at {', '.join(self.base_urls)}); "
                        f"last error: {e.reason}") from None
                if scanner.emitted and not collect:
                    kept_tokens = max(kept_tokens + info.chunks, self.count_tokens(scanner.text))
                    if kept_tokens >= params.max_tokens:
                        info = _Attempt(finish="length")
                        break
                if server is not None and len(self.router.servers) > 1:
                    avoid = {server.url}   # try another server first
                delay = self._backoff(attempts, e.retry_after)
                self._check_deadline(start, delay)
                await asyncio.sleep(delay)
        if scanner.hit is None:
            tail = scanner.flush()
            if tail and not collect:
                yield tail
        prompt = route if kind == "chat" else fields["prompt"]
        cs.completion = self._completion(scanner, info, prompt, start, first, time.perf_counter(), resumed)

    def _check_deadline(self, start: float, extra: float = 0.0) -> None:
        if self.deadline_s is not None and time.perf_counter() + extra - start > self.deadline_s:
            raise DeadlineExceededError(f"call to {self.model} ran past its deadline of {self.deadline_s:g} s")

    def _completion(self, scanner: StopScanner, info: _Attempt, prompt: str, start: float, first: float | None,
                    end: float, resumed: bool) -> Completion:
        text = scanner.text
        usage = None if resumed else info.usage
        if scanner.hit is not None:
            finish, which = "stop", scanner.hit
        else:
            finish = "length" if info.finish == "length" else "stop"
            which = info.stop_reason if isinstance(info.stop_reason, str) else None
        if usage is not None:
            generated = int(usage.get("completion_tokens") or 0)
            prompt_tokens = int(usage.get("prompt_tokens") or 0)
            cached = int(((usage.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0)
            estimated = False
        else:
            # No usage, or a resumed stream whose pieces came from several requests: count the text itself.
            generated, prompt_tokens, cached, estimated = self.count_tokens(text), self.count_tokens(prompt), 0, True
        first = first if first is not None else end
        return Completion(text=text, generated_tokens=generated, prompt_tokens=prompt_tokens, finish_reason=finish,
                          stop_string=which, ttft_s=first - start, decode_s=end - first,
                          cached_prompt_tokens=cached, tokens_estimated=estimated)

    async def _attempt(self, state: _LoopState, server: ServerState, kind: str, fields: dict,
                       params: GenerationParams, max_tokens: int, info: _Attempt) -> AsyncIterator[str]:
        """One request to one server; yields text pieces; raises _Retryable or a final BackendError."""
        url = f"{server.url}/{'chat/completions' if kind == 'chat' else 'completions'}"
        body = self._body(kind, fields, params, max_tokens, self.use_streaming)
        try:
            if not self.use_streaming:
                resp = await state.client.post(url, json=body, headers=self._headers())
                self._check_status(resp.status_code, resp.content, url, resp.headers)
                try:
                    obj = resp.json()
                    choice = obj["choices"][0]
                except (ValueError, KeyError, IndexError, TypeError):
                    raise _Retryable(f"malformed response from {url}: {_excerpt(resp.content)}") from None
                info.usage = obj.get("usage")
                info.finish, info.stop_reason = choice.get("finish_reason"), choice.get("stop_reason")
                text = (choice.get("message") or {}).get("content") if kind == "chat" else choice.get("text")
                info.chunks = 1
                yield text or ""
                return
            async with state.client.stream("POST", url, json=body, headers=self._headers()) as resp:
                if resp.status_code != 200:
                    self._check_status(resp.status_code, await resp.aread(), url, resp.headers)
                done = False
                async for line in resp.aiter_lines():
                    if not line.startswith("data:"):
                        continue   # blank separators, comments (": keep-alive"), event names
                    data = line[5:].strip()
                    if data == "[DONE]":
                        done = True
                        break
                    try:
                        obj = json.loads(data)
                    except ValueError:
                        raise _Retryable(f"malformed stream event from {url}: {data[:200]!r}") from None
                    if obj.get("error"):
                        # vLLM reports failures inside a running stream as an error event.
                        raise _Retryable(f"server error inside the stream from {url}: {_excerpt(data)}")
                    if obj.get("usage"):
                        info.usage = obj["usage"]
                    for choice in obj.get("choices") or []:
                        piece = ((choice.get("delta") or {}).get("content") if kind == "chat"
                                 else choice.get("text"))
                        if choice.get("finish_reason"):
                            info.finish, info.stop_reason = choice["finish_reason"], choice.get("stop_reason")
                        if piece:
                            info.chunks += 1
                            yield piece
                if not done:
                    raise _Retryable(f"stream from {url} ended without [DONE]")
        except httpx.TransportError as e:
            raise _Retryable(_transport_reason(e, url, self.timeout_s)) from None

    @staticmethod
    def _check_status(status: int, content: bytes, url: str, headers: httpx.Headers) -> None:
        if status == 200:
            return
        retryable = status == 429 or status >= 500
        if retryable:
            raise _Retryable(f"HTTP {status} from {url}: {_excerpt(content)}", _retry_after(headers))
        raise BackendHTTPError(status, url, _excerpt(content), retryable=False)
