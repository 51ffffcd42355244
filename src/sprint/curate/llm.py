"""LLM calls of the curation pipeline: the `ChatModel` Protocol, cached and concurrency-limited calls, token usage
and cost per model.

Any OpenAI-compatible endpoint works through `sprint.backends.openai_http.OpenAIBackend` (it has `chat`); tests
use a local fake server or an in-process double.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from typing import Protocol, runtime_checkable

from sprint.backends.base import Completion, GenerationParams
from sprint.curate.cache import DiskCache, json_hash


@runtime_checkable
class ChatModel(Protocol):
    """Answers a list of chat messages."""

    async def chat(self, messages: list[dict], params: GenerationParams) -> Completion: ...


@dataclass
class ModelUsage:
    """Tokens and calls of one model. `cached_*` count answers served from the on-disk cache (not paid again)."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_calls: int = 0
    cached_prompt_tokens: int = 0
    cached_completion_tokens: int = 0
    estimated: bool = False  # some counts were estimated (the server sent no usage)

    def cost(self, price: tuple[float, float] | None, *, include_cached: bool = False) -> float | None:
        """USD for the calls made (or all answers, with `include_cached`), given (input, output) USD per 1M tokens."""
        if price is None:
            return None
        p, c = self.prompt_tokens, self.completion_tokens
        if include_cached:
            p, c = p + self.cached_prompt_tokens, c + self.cached_completion_tokens
        return (p * price[0] + c * price[1]) / 1e6


@dataclass
class UsageLedger:
    """Usage per model, and the price table used to turn it into cost."""

    prices: dict[str, tuple[float, float]] = field(default_factory=dict)
    models: dict[str, ModelUsage] = field(default_factory=dict)

    def add(self, model: str, prompt_tokens: int, completion_tokens: int, *, cached: bool, estimated: bool) -> None:
        u = self.models.setdefault(model, ModelUsage())
        if cached:
            u.cached_calls += 1
            u.cached_prompt_tokens += prompt_tokens
            u.cached_completion_tokens += completion_tokens
        else:
            u.calls += 1
            u.prompt_tokens += prompt_tokens
            u.completion_tokens += completion_tokens
        u.estimated |= estimated

    def to_json(self) -> dict:
        out = {}
        for name, u in sorted(self.models.items()):
            price = self.prices.get(name)
            out[name] = {**asdict(u), "price_per_1m": list(price) if price else None,
                         "cost_usd": u.cost(price), "cost_usd_including_cached": u.cost(price, include_cached=True)}
        return out

    def lines(self) -> list[str]:
        rows = []
        for name, u in sorted(self.models.items()):
            price = self.prices.get(name)
            cost = u.cost(price)
            cost_s = f"${cost:.4f}" if cost is not None else "cost n/a (no price for this model; see --price)"
            est = " (token counts partly estimated)" if u.estimated else ""
            rows.append(f"{name}: {u.calls} calls, {u.prompt_tokens} prompt + {u.completion_tokens} completion "
                        f"tokens, {cost_s}; from cache: {u.cached_calls} answers{est}")
        return rows


def parse_price(spec: str) -> tuple[str, tuple[float, float]]:
    """"MODEL=IN,OUT" (USD per 1M input and output tokens) -> (MODEL, (IN, OUT))."""
    name, sep, rest = spec.rpartition("=")
    try:
        a, b = rest.split(",")
        if not sep or not name:
            raise ValueError
        return name, (float(a), float(b))
    except ValueError:
        raise ValueError(f"--price: expected MODEL=INPUT,OUTPUT (USD per 1M tokens), got {spec!r}") from None


class LLMCallError(RuntimeError):
    """The model could not be reached or failed after the backend's retries (the item is rejected, not cached)."""


@dataclass
class LLMEndpoint:
    """A model under a name (the name is part of cache keys and usage) with its decoding settings."""

    name: str
    model: ChatModel
    params: GenerationParams = field(default_factory=lambda: GenerationParams(max_tokens=8000, temperature=0.0))


@dataclass
class ChatAnswer:
    """The text of an answer and why it ended ("stop", or "length" when cut at max_tokens)."""

    text: str
    finish_reason: str = "stop"


class CachedChat:
    """Chat calls through the disk cache, at most `concurrency` in flight, with usage recorded per model."""

    def __init__(self, cache: DiskCache, ledger: UsageLedger, concurrency: int = 8):
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.cache = cache
        self.ledger = ledger
        self.concurrency = concurrency
        self._sem: asyncio.Semaphore | None = None

    async def __call__(self, endpoint: LLMEndpoint, input_hash: str, step: str, messages: list[dict]) -> ChatAnswer:
        p = endpoint.params
        prompt_hash = json_hash({"messages": messages, "max_tokens": p.max_tokens, "temperature": p.temperature,
                                 "top_p": p.top_p, "seed": p.seed, "stop": p.stop})
        key = self.cache.key(input_hash, step, endpoint.name, prompt_hash)
        hit = self.cache.get(key)
        if hit is not None:
            self.ledger.add(endpoint.name, hit.get("prompt_tokens", 0), hit.get("completion_tokens", 0), cached=True,
                            estimated=hit.get("estimated", False))
            return ChatAnswer(hit["text"], hit.get("finish_reason", "stop"))
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.concurrency)
        async with self._sem:
            try:
                c = await endpoint.model.chat(messages, p)
            except Exception as e:  # any backend failure rejects the item; the next run will try again
                raise LLMCallError(f"{type(e).__name__}: {e}") from e
        estimated = bool(getattr(c, "tokens_estimated", False))
        self.ledger.add(endpoint.name, c.prompt_tokens, c.generated_tokens, cached=False, estimated=estimated)
        # Answers cut by max_tokens are cached too: the same request would be cut the same way again.
        self.cache.put(key, {"text": c.text, "prompt_tokens": c.prompt_tokens, "completion_tokens": c.generated_tokens,
                             "finish_reason": c.finish_reason, "estimated": estimated, "step": step,
                             "model": endpoint.name})
        return ChatAnswer(c.text, c.finish_reason)
