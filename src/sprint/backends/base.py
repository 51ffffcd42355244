"""The `Backend` Protocol every model backend implements, its request and result records, and the scripted double.

A backend turns a text prompt into generated text. Many calls may be in flight at once (the orchestrator runs a
stage's executors concurrently), so every method is async. Provider quirks stay inside each backend.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable, Protocol, Sequence, runtime_checkable


@dataclass
class GenerationParams:
    """Decoding settings of one call."""

    max_tokens: int = 8000
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    # A hint: whether later prompts may extend this call's prompt and output, so that a backend with its own prefix
    # cache should keep the call's KV when it ends. False for a SPRINT executor, whose output no later prompt
    # continues (the next planner prompt holds it at other positions). Backends without such a cache ignore it.
    keep_kv: bool = True


@dataclass
class Completion:
    """One finished generation. `finish_reason` is "stop" (a stop string or EOS), "length" or "error"."""

    text: str
    generated_tokens: int
    prompt_tokens: int = 0
    finish_reason: str = "stop"
    stop_string: str | None = None   # which stop string ended it, when one did (not included in `text`)
    ttft_s: float = 0.0              # time to first token
    decode_s: float = 0.0            # time from first token to the end
    cached_prompt_tokens: int = 0    # prompt tokens served from a prefix cache, when the backend knows
    tokens_estimated: bool = False   # True when the token counts are an estimate (the server sent no usage)


class BackendError(RuntimeError):
    """A backend could not produce a completion; the message says which server / model and why."""


class CompletionStream:
    """Async iterator of text deltas (what `Backend.stream` returns); once it is exhausted, `.completion` holds
    the finished call's record (token counts, finish reason, times), so a streaming caller loses nothing."""

    def __init__(self, produce: Callable[["CompletionStream"], AsyncIterator[str]]):
        self.completion: Completion | None = None
        self._it = produce(self)

    def __aiter__(self) -> "CompletionStream":
        return self

    async def __anext__(self) -> str:
        return await self._it.__anext__()

    async def aclose(self) -> None:
        """Stop early (frees the request / the batch slot)."""
        await self._it.aclose()


@runtime_checkable
class Backend(Protocol):
    """Generates text from a text prompt; async, many calls in flight at once.

    Optional: `prepare_prompt(text) -> None`, a hint that a coming prompt will hold `text` (the orchestrator hands
    over each execution as it finishes, but a stage's last; the in-process backend tokenizes it ahead)."""

    async def generate(self, prompt: str, params: GenerationParams) -> Completion:
        """Generate to completion (a stop string, EOS or max_tokens)."""
        ...

    def stream(self, prompt: str, params: GenerationParams) -> AsyncIterator[str]:
        """Yield text deltas as they are generated; stop strings are honoured and never yielded."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` under this backend's tokenizer (no special tokens)."""
        ...


def apply_stop(text: str, stop: Sequence[str]) -> tuple[str, str | None]:
    """Cut `text` at the earliest stop string. Returns (text before it, the stop string or None)."""
    best, which = len(text), None
    for s in stop:
        if not s:
            continue
        i = text.find(s)
        if i != -1 and i < best:
            best, which = i, s
    return text[:best], which


class ScriptedBackend:
    """Test double: answers each prompt with scripted text, honouring stop strings like a real backend.

    `script` maps a prompt to the full text the "model" would write; it may be a callable (prompt -> text), a dict
    from a prompt substring to text (first match wins), or a list consumed in order. `delay_s` (float or callable
    prompt -> seconds) simulates generation time; `chunk` sets the streaming delta size. Every call is logged in
    `calls` as (prompt, params).
    """

    def __init__(self, script, *, delay_s: float | Callable[[str], float] = 0.0, chunk: int = 4,
                 fail: Callable[[str], bool] | None = None):
        self.script = script
        self.delay_s = delay_s
        self.chunk = chunk
        self.fail = fail
        self.calls: list[tuple[str, GenerationParams]] = []
        self._queue = list(script) if isinstance(script, list) else None

    def _text_for(self, prompt: str) -> str:
        if callable(self.script):
            return self.script(prompt)
        if self._queue is not None:
            if not self._queue:
                raise RuntimeError("ScriptedBackend: script exhausted")
            return self._queue.pop(0)
        for key, text in self.script.items():
            if key in prompt:
                return text
        raise KeyError(f"ScriptedBackend: no scripted answer for prompt ending {prompt[-80:]!r}")

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def _delay(self, prompt: str) -> float:
        return self.delay_s(prompt) if callable(self.delay_s) else self.delay_s

    def _produce(self, prompt: str, params: GenerationParams) -> tuple[str, str | None]:
        self.calls.append((prompt, params))
        if self.fail is not None and self.fail(prompt):
            raise RuntimeError("ScriptedBackend: scripted failure")
        text, which = apply_stop(self._text_for(prompt), params.stop)
        words = text.split(" ")
        if params.max_tokens and len(text.split()) > params.max_tokens:
            # Cut to max_tokens whitespace words, as a real backend cuts at max_tokens tokens.
            kept, count = [], 0
            for w in words:
                count += bool(w.strip())
                if count > params.max_tokens:
                    break
                kept.append(w)
            text, which = " ".join(kept), None
        return text, which

    async def _pieces(self, prompt: str, text: str) -> AsyncIterator[str]:
        delay = self._delay(prompt)
        pieces = [text[i:i + self.chunk] for i in range(0, len(text), self.chunk)] or [""]
        for piece in pieces:
            if delay:
                await asyncio.sleep(delay / len(pieces))
            yield piece

    async def generate(self, prompt: str, params: GenerationParams) -> Completion:
        start = time.perf_counter()
        text, which = self._produce(prompt, params)
        first = None
        async for _ in self._pieces(prompt, text):
            first = first if first is not None else time.perf_counter()
        first = first or time.perf_counter()
        return Completion(text=text, generated_tokens=self.count_tokens(text), prompt_tokens=self.count_tokens(prompt),
                          finish_reason="stop" if which else "length" if self.count_tokens(text) >= params.max_tokens
                          else "stop", stop_string=which, ttft_s=first - start, decode_s=time.perf_counter() - first)

    async def stream(self, prompt: str, params: GenerationParams) -> AsyncIterator[str]:
        text, _ = self._produce(prompt, params)
        async for piece in self._pieces(prompt, text):
            yield piece
