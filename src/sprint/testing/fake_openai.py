"""A local OpenAI-compatible HTTP server for tests: completions and chat completions, streaming, faults on demand.

It speaks the parts of the protocol that vLLM / SGLang serve and our HTTP backend uses: POST /v1/completions and
POST /v1/chat/completions, streaming as server-sent events (`data: {...}` chunks ending with `data: [DONE]`, with a
final usage chunk when `stream_options.include_usage` is set) or one JSON body, `usage` with prompt / completion
tokens (and `prompt_tokens_details.cached_tokens`, simulating a prefix cache), `stop`, `max_tokens` /
`max_completion_tokens`. GET /v1/models lists the model.

What the "model" writes comes from a responder: a callable (request json -> full text), a constant string, or a list
consumed in order. The server then plays a real server's part on that text: it splits it into "tokens" (a word with
its leading whitespace), stops at the first stop string (not included in the output) or after max_tokens tokens, and
streams one token per chunk. Faults are queued and each request consumes the first one: an HTTP status (500, 429,
400, ...), a connection dropped after k streamed chunks (or before any response), a delay before the response.
`chunk_delay_s` slows every streamed chunk. Streams use chunked transfer encoding, so a dropped connection is a
protocol error for the client, as it would be with a real server.

    with FakeOpenAIServer(lambda req: "Hello world") as srv:
        srv.fail_next(2, status=500)
        ... OpenAIBackend(srv.base_url, "fake-model") ...
        assert len(srv.requests) == 3
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable

#: How the fake server splits text into tokens: a run of non-space characters with the whitespace before it.
FAKE_TOKEN_RE = re.compile(r"\s*\S+|\s+")


def fake_tokens(text: str) -> list[str]:
    """The fake server's tokenization: pieces that concatenate back to `text`."""
    return FAKE_TOKEN_RE.findall(text)


def request_text(body: dict) -> str:
    """The text a request asks the model to continue: the completions prompt, or the chat messages' contents."""
    if "prompt" in body:
        p = body["prompt"]
        return p if isinstance(p, str) else "".join(p)
    return "\n".join(str(m.get("content", "")) for m in body.get("messages", []))


@dataclass
class ReceivedRequest:
    """One request as the server got it (headers included, so tests can check what the client sent)."""

    method: str
    path: str
    body: dict
    headers: dict[str, str]
    time: float


@dataclass
class Fault:
    """What to do to one request instead of (or before) answering it normally."""

    kind: str                 # "status" | "drop" | "delay"
    status: int = 500
    body: str = "injected failure"
    retry_after: float | None = None
    after_chunks: int = 0     # "drop": streamed chunks sent before the connection is cut
    seconds: float = 0.0      # "delay": wait before answering


@dataclass
class _Generation:
    pieces: list[str]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    stop_reason: str | None = None   # the stop string that ended it (vLLM's `stop_reason`), None for EOS / length


class FakeOpenAIServer:
    """Context manager running an OpenAI-compatible server on 127.0.0.1 in a background thread (see module doc)."""

    def __init__(self, responder: Callable[[dict], str] | str | Iterable[str] = "", *, model: str = "fake-model",
                 usage: bool = True, chunk_delay_s: float = 0.0, delay_s: float = 0.0, cache_capacity: int = 256,
                 honour_stop: bool = True):
        if callable(responder) or isinstance(responder, str):
            self._responder, self._queue = responder, None
        else:
            self._responder, self._queue = None, deque(responder)
        self.model = model
        self.usage = usage                    # False: responses carry no usage (clients must estimate)
        self.chunk_delay_s = chunk_delay_s    # sleep between streamed chunks (a slow decode)
        self.delay_s = delay_s                # sleep before every response (a slow prefill / queue)
        self.honour_stop = honour_stop        # False: ignore `stop` (a server that does; clients must cut)
        self.active = 0                       # requests being handled now
        self.max_active = 0                   # the most handled at once (tests of client concurrency limits)
        self.requests: list[ReceivedRequest] = []
        self._faults: deque[Fault] = deque()
        self._recent_prompts: deque[list[str]] = deque(maxlen=cache_capacity)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> "FakeOpenAIServer":
        handler = type("_Handler", (_Handler,), {"fake": self})
        self._httpd = _QuietServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()   # wakes handlers sleeping in a delay
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("FakeOpenAIServer is not running (use it as a context manager or call start())")
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        """The URL a client is given, e.g. http://127.0.0.1:PORT/v1."""
        return f"http://127.0.0.1:{self.port}/v1"

    # ------------------------------------------------------------------------------------------ faults
    def fail_next(self, n: int = 1, status: int = 500, body: str = "injected failure",
                  retry_after: float | None = None) -> None:
        """The next `n` requests get HTTP `status` with an OpenAI-style error body."""
        self._push(n, Fault("status", status=status, body=body, retry_after=retry_after))

    def drop_next(self, n: int = 1, after_chunks: int = 0) -> None:
        """The next `n` requests lose their connection: after `after_chunks` streamed chunks (0: before any reply)."""
        self._push(n, Fault("drop", after_chunks=after_chunks))

    def delay_next(self, n: int = 1, seconds: float = 1.0) -> None:
        """The next `n` requests wait `seconds` before the server answers (then answer normally)."""
        self._push(n, Fault("delay", seconds=seconds))

    def _push(self, n: int, fault: Fault) -> None:
        with self._lock:
            self._faults.extend(Fault(**fault.__dict__) for _ in range(n))

    def _take_fault(self) -> Fault | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def sleep(self, seconds: float) -> bool:
        """Sleep unless the server is closing; returns False when woken by close()."""
        return not self._closing.wait(seconds) if seconds > 0 else True

    # ------------------------------------------------------------------------------------------ the "model"
    def _full_text(self, body: dict) -> str:
        if self._queue is not None:
            with self._lock:
                if not self._queue:
                    raise LookupError("FakeOpenAIServer: responder queue exhausted")
                return self._queue.popleft()
        if isinstance(self._responder, str):
            return self._responder
        return self._responder(body)

    def generate(self, body: dict) -> _Generation:
        """Run the responder's text through max_tokens and stop strings, as a server decoding token by token."""
        full = self._full_text(body)
        stop = (body.get("stop") or []) if self.honour_stop else []
        stop = [stop] if isinstance(stop, str) else [s for s in stop if s]
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        toks = fake_tokens(full)
        pieces: list[str] = []
        text, finish = "", "stop"
        for tok in toks:
            if max_tokens is not None and len(pieces) >= max_tokens:
                finish = "length"
                break
            pieces.append(tok)
            text += tok
            hits = [i for i in (text.find(s) for s in stop) if i != -1]
            if hits:
                break
        else:
            if max_tokens is not None and len(pieces) >= max_tokens:
                finish = "length"   # a real model could not have emitted its end-of-sequence token within budget
        generated = len(pieces)     # counts the token that completed a stop string, as servers do
        hits = sorted((i, s) for s in stop if (i := text.find(s)) != -1)
        stop_reason = None
        if hits:
            pieces, finish, stop_reason = _cut_pieces(pieces, hits[0][0]), "stop", hits[0][1]
        prompt_toks = fake_tokens(request_text(body))
        with self._lock:
            cached = max((_common_prefix(prompt_toks, p) for p in self._recent_prompts), default=0)
            self._recent_prompts.append(prompt_toks)
        return _Generation(pieces=[p for p in pieces if p], finish_reason=finish, prompt_tokens=len(prompt_toks),
                           completion_tokens=generated, cached_tokens=cached, stop_reason=stop_reason)


def _cut_pieces(pieces: list[str], cut: int) -> list[str]:
    out, pos = [], 0
    for p in pieces:
        if pos + len(p) >= cut:
            out.append(p[:cut - pos])
            break
        out.append(p)
        pos += len(p)
    return out


def _common_prefix(a: list[str], b: list[str]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # Clients that hang up (timeouts, cancelled streams) are normal in fault tests; anything else is printed.
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive and chunked streams, like real servers
    fake: FakeOpenAIServer

    def log_message(self, format, *args):  # quiet: tests read fake.requests instead
        pass

    # -------------------------------------------------------------------------------- routing
    def do_GET(self):
        if self.path.rstrip("/").endswith("/models"):
            self._json(200, {"object": "list", "data": [{"id": self.fake.model, "object": "model"}]})
        else:
            self._error(404, f"no route for GET {self.path}")

    def do_POST(self):
        fake = self.fake
        with fake._lock:
            fake.active += 1
            fake.max_active = max(fake.max_active, fake.active)
        try:
            self._post()
        finally:
            with fake._lock:
                fake.active -= 1

    def _post(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError as e:
            return self._error(400, f"request body is not JSON: {e}")
        fake = self.fake
        with fake._lock:
            fake.requests.append(ReceivedRequest("POST", self.path, body, dict(self.headers.items()), time.time()))
        fault = fake._take_fault()
        if fault is not None and fault.kind == "delay":
            if not fake.sleep(fault.seconds):
                return self._drop()
            fault = None
        if not fake.sleep(fake.delay_s):
            return self._drop()
        if fault is not None and fault.kind == "status":
            return self._error(fault.status, fault.body, retry_after=fault.retry_after)
        if fault is not None and fault.kind == "drop" and (fault.after_chunks <= 0 or not body.get("stream")):
            return self._drop()
        path = self.path.split("?")[0].rstrip("/")
        if path.endswith("/chat/completions"):
            chat = True
        elif path.endswith("/completions"):
            chat = False
        else:
            return self._error(404, f"no route for POST {self.path}")
        if chat and not isinstance(body.get("messages"), list):
            return self._error(400, "'messages' must be a list")
        if not chat and "prompt" not in body:
            return self._error(400, "'prompt' is required")
        try:
            gen = fake.generate(body)
        except LookupError as e:
            return self._error(500, str(e))
        if body.get("stream"):
            drop_after = fault.after_chunks if fault is not None and fault.kind == "drop" else None
            self._stream(body, gen, chat, drop_after)
        else:
            self._json(200, self._full_body(body, gen, chat))

    # -------------------------------------------------------------------------------- bodies
    def _usage(self, gen: _Generation) -> dict:
        return {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
                "total_tokens": gen.prompt_tokens + gen.completion_tokens,
                "prompt_tokens_details": {"cached_tokens": gen.cached_tokens}}

    def _full_body(self, body: dict, gen: _Generation, chat: bool) -> dict:
        text = "".join(gen.pieces)
        choice: dict[str, Any] = {"index": 0, "finish_reason": gen.finish_reason, "logprobs": None,
                                  "stop_reason": gen.stop_reason}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        out = {"id": "cmpl-fake", "object": "chat.completion" if chat else "text_completion",
               "created": int(time.time()), "model": body.get("model", self.fake.model), "choices": [choice]}
        if self.fake.usage:
            out["usage"] = self._usage(gen)
        return out

    def _chunk(self, body: dict, chat: bool, text: str | None, finish: str | None, first: bool = False,
               stop_reason: str | None = None) -> dict:
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish, "logprobs": None}
        if finish is not None:
            choice["stop_reason"] = stop_reason
        if chat:
            delta: dict[str, Any] = {"role": "assistant"} if first else {}
            if text is not None:
                delta["content"] = text
            choice["delta"] = delta
        else:
            choice["text"] = text or ""
        return {"id": "cmpl-fake", "object": "chat.completion.chunk" if chat else "text_completion",
                "created": int(time.time()), "model": body.get("model", self.fake.model), "choices": [choice]}

    def _stream(self, body: dict, gen: _Generation, chat: bool, drop_after: int | None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        events = []
        if chat:
            events.append(self._chunk(body, chat, "", None, first=True))
        for k, piece in enumerate(gen.pieces):
            last = k == len(gen.pieces) - 1
            events.append(self._chunk(body, chat, piece, gen.finish_reason if last else None,
                                      stop_reason=gen.stop_reason))
        if not gen.pieces:
            events.append(self._chunk(body, chat, "" if not chat else None, gen.finish_reason,
                                      stop_reason=gen.stop_reason))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        if include_usage and self.fake.usage:
            final = self._chunk(body, chat, None, None)
            final["choices"] = []
            final["usage"] = self._usage(gen)
            events.append(final)
        try:
            for k, ev in enumerate(events):
                if drop_after is not None and k >= drop_after:
                    return self._drop()
                if k and not self.fake.sleep(self.fake.chunk_delay_s):
                    return self._drop()
                self._write_chunk(f"data: {json.dumps(ev)}\n\n".encode())
            self._write_chunk(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True   # the client went away; nothing to do

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _json(self, status: int, obj: dict, extra_headers: dict[str, str] | None = None) -> None:
        data = json.dumps(obj).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (extra_headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _error(self, status: int, message: str, retry_after: float | None = None) -> None:
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else None
        self._json(status, {"error": {"message": message, "type": "fake_error", "code": status}}, headers)

    def _drop(self) -> None:
        """Cut the TCP connection without finishing the response."""
        self.close_connection = True
        try:
            self.wfile.flush()
        except OSError:
            pass
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
