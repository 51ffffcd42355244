"""The in-process transformers backend: a causal LM from a local directory (or the hub), batched decoding with
continuous batching and a prefix KV cache; the offline default.

How it runs
-----------
Requests go to one scheduler task. Each *step* is one forward pass over a list of *rows*; a row is one token of one
sequence at its absolute position. Every sequence in its decode phase gets one row per step (the executors of a stage
decode side by side); prompts being prefilled fill the remaining rows in chunks (`step_tokens` rows per step in all),
so a newcomer's prefill never stalls the sequences already decoding, and new requests join at step boundaries
(continuous batching). The forward pass runs in a worker thread, so the event loop (the orchestrator, streaming
consumers) stays responsive.

KV cache and prefix reuse
-------------------------
Each sequence owns a `KVStore` (per layer: keys and values for its positions). The model's attention is swapped
(through transformers' `AttentionInterface`) for `rows_attention`, which writes each row's key/value into its
sequence's store and attends over exactly that sequence's keys up to the row's position. Before a request is prefilled
its prompt ids are matched against the sequences still running and a prefix cache of finished ones (LRU, bounded in
tokens); the longest common prefix is copied and only the rest is prefilled. So the shared prefix (system prompt,
question, earlier stages, the plan the planner is still writing) is encoded once and reused by every executor and by
the next stage. `stats.prefilled_tokens` and `Completion.cached_prompt_tokens` count it.

Why not DynamicCache with left padding
--------------------------------------
Greedy outputs must be identical whether a request runs alone or in a batch. A padded batch breaks that twice: BLAS
picks a different kernel (different summation order) for different numbers of rows, and padding changes the length of
every attention reduction. Measured on CPU float32 (MKL): `linear(x[:1], W)` and `linear(x[:4], W)[:1]` differ in the
last bits, while for a FIXED row count the result of a row does not depend on its slot or on the other rows. Hence the
exact mode (default on CPU): every `nn.Linear` runs on tiles of exactly `tile_rows` rows (zero-padded), attention runs
per row over that row's own unpadded keys, and everything else (norms, rotary, activations) is row-wise. A token's
logits then depend only on the tokens before it: not on the batch, the slot, whether it was prefilled or decoded, or
whether its prefix KV came from the cache. Tests assert bitwise-equal logits. The fast mode (default on GPU) uses
the model's own linear layers and one attention call per sequence segment: same results up to floating-point noise,
as with vLLM.

Text
----
Tokens are detokenized incrementally (with a few prompt tokens of context, so leading spaces come out right); stop
strings are found on the text, also across token borders, cut exactly, and never emitted. EOS (the tokenizer's and
the generation config's) ends a sequence. Greedy when temperature == 0, else sampling (temperature, top_p) with a
per-request generator seeded by `params.seed`, so sampled outputs do not depend on the batch either.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import types
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

from sprint.backends.base import BackendError, Completion, CompletionStream, GenerationParams
from sprint.backends.stops import StopScanner

log = logging.getLogger(__name__)

ATTENTION_NAME = "sprint_rows"


# ---------------------------------------------------------------------------------------------- KV storage
def _capacity(n: int) -> int:
    # A function of the length only, so a sequence's buffers have the same strides whatever its history.
    cap = 256
    while cap < n:
        cap *= 2
    return cap


class KVStore:
    """Keys and values of one sequence, per layer: tensors [kv_heads, capacity, head_dim], grown by doubling."""

    def __init__(self) -> None:
        self.keys: dict[int, Any] = {}
        self.values: dict[int, Any] = {}
        self.length = 0   # positions whose KV is written in every layer

    def write(self, layer: int, pos: int, k, v) -> None:
        """Store k, v ([kv_heads, n, head_dim]) at positions pos .. pos+n-1 of `layer`."""
        end = pos + k.shape[1]
        buf_k = self.keys.get(layer)
        if buf_k is None or buf_k.shape[1] < end:
            cap = _capacity(end)
            new_k = k.new_zeros(k.shape[0], cap, k.shape[2])
            new_v = v.new_zeros(v.shape[0], cap, v.shape[2])
            if buf_k is not None:
                new_k[:, :buf_k.shape[1]] = buf_k
                new_v[:, :buf_k.shape[1]] = self.values[layer]
            self.keys[layer], self.values[layer] = new_k, new_v
        self.keys[layer][:, pos:end] = k
        self.values[layer][:, pos:end] = v

    def copy_prefix(self, n: int) -> "KVStore":
        """A new store holding a copy of the first `n` positions."""
        out = KVStore()
        cap = _capacity(n)
        for layer, k in self.keys.items():
            v = self.values[layer]
            nk = k.new_zeros(k.shape[0], cap, k.shape[2])
            nv = v.new_zeros(v.shape[0], cap, v.shape[2])
            nk[:, :n] = k[:, :n]
            nv[:, :n] = v[:, :n]
            out.keys[layer], out.values[layer] = nk, nv
        out.length = n
        return out

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for d in (self.keys, self.values) for t in d.values())


@dataclass
class StepRows:
    """What one forward pass computes: segments of consecutive positions, each of one sequence.

    Passed to the model as the `sprint_rows` keyword argument, which transformers hands on to the attention function.
    """

    segments: list[tuple[int, int, KVStore, int]]   # (first row, end row, store, position of the first row)
    exact: bool


def rows_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                   sprint_rows: StepRows | None = None, sliding_window: int | None = None, softcap=None, **kwargs):
    """Attention over per-sequence KV stores (see module doc). Falls back to SDPA when called without a step plan."""
    import torch
    import torch.nn.functional as F

    if sprint_rows is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      sliding_window=sliding_window, softcap=softcap, **kwargs)
    if softcap is not None:
        raise NotImplementedError("attention logit softcapping is not supported by the in-process backend")
    layer = module.layer_idx
    gqa = query.shape[1] != key.shape[1]
    out = torch.zeros_like(query)   # [1, heads, rows, head_dim]
    for start, end, store, pos0 in sprint_rows.segments:
        store.write(layer, pos0, key[0, :, start:end], value[0, :, start:end])
        ks, vs = store.keys[layer], store.values[layer]
        if sprint_rows.exact or end - start == 1:
            # One query at a time over exactly its own keys: the same computation whatever else is in the step.
            for r in range(start, end):
                hi = pos0 + (r - start) + 1
                lo = max(0, hi - sliding_window) if sliding_window else 0
                out[:, :, r:r + 1] = F.scaled_dot_product_attention(
                    query[:, :, r:r + 1], ks[None, :, lo:hi], vs[None, :, lo:hi], scale=scaling, enable_gqa=gqa)
        else:
            hi = pos0 + end - start
            qpos = torch.arange(pos0, hi, device=query.device)[:, None]
            kpos = torch.arange(hi, device=query.device)[None, :]
            mask = kpos <= qpos
            if sliding_window:
                mask &= kpos > qpos - sliding_window
            out[:, :, start:end] = F.scaled_dot_product_attention(
                query[:, :, start:end], ks[None, :, :hi], vs[None, :, :hi], attn_mask=mask[None, None],
                scale=scaling, enable_gqa=gqa)
    return out.transpose(1, 2).contiguous(), None


def _tiled_linear_forward(tile: int):
    """An nn.Linear forward that always multiplies exactly `tile` rows at a time (zero-padded): batch-invariant."""
    import torch
    import torch.nn.functional as F

    def forward(self, x):
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        n = flat.shape[0]
        if n == 0:
            return F.linear(x, self.weight, self.bias)
        pad = (-n) % tile
        if pad:
            flat = torch.cat([flat, flat.new_zeros(pad, shape[-1])])
        out = torch.cat([F.linear(flat[i:i + tile], self.weight, self.bias) for i in range(0, flat.shape[0], tile)])
        return out[:n].reshape(*shape[:-1], out.shape[-1])

    return forward


# ---------------------------------------------------------------------------------------------- requests
@dataclass
class BackendStats:
    """Counters over the backend's life (tests read them to verify batching and prefix reuse)."""

    prefilled_tokens: int = 0        # prompt tokens computed by a forward pass
    reused_prompt_tokens: int = 0    # prompt tokens whose KV came from the prefix cache or a running sequence
    generated_tokens: int = 0
    forward_passes: int = 0
    rows_computed: int = 0
    max_sequences_in_step: int = 0   # the most sequences one forward pass advanced
    requests: int = 0


@dataclass(eq=False)   # identity semantics: requests are compared as objects, never field by field
class _Request:
    prompt_ids: list[int]
    params: GenerationParams
    queue: asyncio.Queue
    submitted: float
    tokens: list[int] = field(default_factory=list)
    store: KVStore | None = None
    cached: int = 0
    generated: int = 0
    scanner: StopScanner | None = None
    prefix_offset: int = 0
    read_offset: int = 0
    first_token: float | None = None
    finish: str | None = None
    cancelled: bool = False
    generator: Any = None

    @property
    def computed(self) -> int:
        return self.store.length if self.store is not None else 0


class _PrefixCache:
    """Finished sequences' token ids and KV, least recently used first out, bounded by total tokens."""

    def __init__(self, max_tokens: int):
        self.max_tokens = max_tokens
        self.entries: OrderedDict[int, tuple[list[int], KVStore]] = OrderedDict()
        self._next = 0
        self.tokens = 0

    def add(self, tokens: list[int], store: KVStore) -> None:
        n = store.length
        if n == 0 or self.max_tokens <= 0:
            return
        tokens = tokens[:n]
        for key, (toks, st) in list(self.entries.items()):
            m = _common_prefix(tokens, toks)
            if m == len(toks):          # the new entry extends an old one: the old one is redundant
                self._drop(key)
            elif m == n:                # already covered by a longer entry
                self.entries.move_to_end(key)
                return
        self.entries[self._next] = (tokens, store)
        self._next += 1
        self.tokens += n
        while self.tokens > self.max_tokens and self.entries:
            self._drop(next(iter(self.entries)))

    def _drop(self, key: int) -> None:
        toks, _ = self.entries.pop(key)
        self.tokens -= len(toks)

    def touch(self, store: KVStore) -> None:
        for key, (_, st) in self.entries.items():
            if st is store:
                self.entries.move_to_end(key)
                return


def _common_prefix(a: list[int], b: list[int]) -> int:
    import numpy as np

    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.nonzero(np.asarray(a[:n]) != np.asarray(b[:n]))[0]
    return int(diff[0]) if len(diff) else n


_DONE = object()


# ---------------------------------------------------------------------------------------------- backend
class TransformersBackend:
    """In-process backend: continuous batching, prefix KV reuse, exact stop strings (see module doc).

    `max_batch` sequences run at once (more wait in a queue); a step computes at most `step_tokens` rows; `exact`
    (default: on CPU) selects the batch-invariant mode; `prefix_cache_tokens` bounds the finished sequences kept for
    reuse. A `model` object given directly is adapted in place (attention function, and tiled linears when exact).
    """

    def __init__(self, model_name_or_path: str | Path | None = None, *, device: str = "auto", dtype: str = "auto",
                 max_batch: int = 8, step_tokens: int = 64, exact: bool | None = None, tile_rows: int = 8,
                 prefix_cache_tokens: int = 65536, add_special_tokens: bool | None = None,
                 trust_remote_code: bool = False, extra_eos_ids=(), on_logits=None, model=None, tokenizer=None):
        import torch

        if model is None:
            if model_name_or_path is None:
                raise ValueError("model_name_or_path: give a local model directory or hub name (or model=...)")
            model, tokenizer = self._load(model_name_or_path, device, dtype, trust_remote_code, tokenizer)
        elif tokenizer is None:
            raise ValueError("tokenizer: required when a model object is given")
        if max_batch < 1:
            raise ValueError(f"max_batch: must be >= 1, got {max_batch}")
        self.model, self.tokenizer = model, tokenizer
        self.name = str(model_name_or_path or getattr(model.config, "_name_or_path", "model"))
        self.device = next(model.parameters()).device
        self.max_batch = max_batch
        self.step_tokens = max(step_tokens, max_batch + 1)
        self.exact = (self.device.type == "cpu") if exact is None else exact
        self.tile_rows = tile_rows
        self.add_special_tokens = add_special_tokens
        self.stats = BackendStats()
        self.max_positions = getattr(model.config, "max_position_embeddings", None)
        self.eos_ids = self._eos_ids() | {int(i) for i in extra_eos_ids}
        # Observer called in the worker thread with (token ids so far, next-token logits) for every sampled token;
        # for debugging and for tests that compare logits bit for bit.
        self.on_logits = on_logits
        self._cache = _PrefixCache(prefix_cache_tokens)
        self._prepare_model(torch)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._pending: deque[_Request] = deque()
        self._active: list[_Request] = []
        self._wake: asyncio.Event | None = None

    def __repr__(self) -> str:
        return (f"TransformersBackend({self.name!r}, device={str(self.device)!r}, max_batch={self.max_batch}, "
                f"exact={self.exact})")

    # ------------------------------------------------------------------------------------------ setup
    @staticmethod
    def _load(path, device: str, dtype: str, trust_remote_code: bool, tokenizer):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        local = Path(path)
        if (str(path).startswith((".", "/", "~")) or local.exists()) and not local.expanduser().is_dir():
            raise FileNotFoundError(f"model_name_or_path: no model directory at {path}")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto":
            # CPUs are slow and inexact in half precision: compute in float32 there; on GPUs keep the checkpoint's.
            torch_dtype = torch.float32 if device == "cpu" else "auto"
        else:
            torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        tok = tokenizer or AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype,
                                                     trust_remote_code=trust_remote_code)
        return model.to(device).eval(), tok

    def _prepare_model(self, torch) -> None:
        from transformers import AttentionInterface

        AttentionInterface.register(ATTENTION_NAME, rows_attention)
        self.model.eval()
        self.model.set_attn_implementation(ATTENTION_NAME)
        if self.model.config._attn_implementation != ATTENTION_NAME:
            raise BackendError(f"{self.name}: this architecture does not route attention through transformers' "
                               "AttentionInterface, which the in-process backend needs")
        if self.exact:
            forward = _tiled_linear_forward(self.tile_rows)
            for m in self.model.modules():
                if type(m) is torch.nn.Linear:
                    m.forward = types.MethodType(forward, m)

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        for src in (getattr(self.model, "generation_config", None), self.model.config, self.tokenizer):
            e = getattr(src, "eos_token_id", None) if src is not None else None
            if isinstance(e, int):
                ids.add(e)
            elif isinstance(e, (list, tuple)):
                ids.update(int(x) for x in e)
        return ids

    # ------------------------------------------------------------------------------------------ tokens
    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0

    def encode_prompt(self, prompt: str) -> list[int]:
        """Prompt ids. By default special tokens (BOS) are added unless the text already starts with the BOS text, as
        a chat template's output does (so BOS is never doubled)."""
        add = self.add_special_tokens
        if add is None:
            bos = getattr(self.tokenizer, "bos_token", None)
            add = not (bos and prompt.startswith(bos))
        return list(self.tokenizer(prompt, add_special_tokens=add)["input_ids"])

    # ------------------------------------------------------------------------------------------ public API
    async def generate(self, prompt: str, params: GenerationParams) -> Completion:
        cs = self.stream(prompt, params)
        async for _ in cs:
            pass
        assert cs.completion is not None
        return cs.completion

    def stream(self, prompt: str, params: GenerationParams) -> CompletionStream:
        return CompletionStream(lambda cs: self._run(cs, prompt, params))

    async def _run(self, cs: CompletionStream, prompt: str, params: GenerationParams) -> AsyncIterator[str]:
        req = self._submit(prompt, params)
        try:
            while True:
                item = await req.queue.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, Completion):
                    cs.completion = item
                    continue
                yield item
        finally:
            if req.finish is None:
                req.cancelled = True   # the consumer stopped early: free the slot at the next step
                if self._wake is not None:
                    self._wake.set()

    async def aclose(self) -> None:
        """Stop the scheduler of the current event loop (running requests get an error)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        self._task = None

    # ------------------------------------------------------------------------------------------ scheduling
    def _submit(self, prompt: str, params: GenerationParams) -> _Request:
        import torch

        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            # Queues and events belong to one loop; requests of a finished loop cannot be waited on any more.
            self._loop, self._pending, self._active = loop, deque(), []
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._scheduler(), name="sprint-transformers-scheduler")
        ids = self.encode_prompt(prompt)
        if not ids:
            raise ValueError("prompt: encodes to no tokens")
        if self.max_positions and len(ids) >= self.max_positions:
            raise ValueError(f"prompt: {len(ids)} tokens, the model's context is {self.max_positions}")
        req = _Request(prompt_ids=ids, params=params, queue=asyncio.Queue(), submitted=time.perf_counter(),
                       tokens=list(ids), scanner=StopScanner(params.stop))
        req.prefix_offset, req.read_offset = max(0, len(ids) - 5), len(ids)
        if params.temperature > 0:
            seed = params.seed if params.seed is not None else random.randrange(2 ** 62)
            req.generator = torch.Generator().manual_seed(seed)
        self.stats.requests += 1
        if params.max_tokens <= 0:
            self._finish(req, "length")
            return req
        self._pending.append(req)
        self._wake.set()
        return req

    def _attach_prefix(self, req: _Request) -> None:
        """Start from the longest prefix of the prompt whose KV exists (running sequences, then finished ones)."""
        best, best_store, from_cache = 0, None, False
        for other in self._active:
            if other.store is not None and other.computed:
                m = _common_prefix(req.prompt_ids, other.tokens[:other.computed])
                if m > best:
                    best, best_store, from_cache = m, other.store, False
        for toks, st in self._cache.entries.values():
            m = _common_prefix(req.prompt_ids, toks)
            if m > best:
                best, best_store, from_cache = m, st, True
        reuse = min(best, len(req.prompt_ids) - 1)   # the last prompt token is always run: its logits are needed
        if reuse > 0 and best_store is not None:
            req.store = best_store.copy_prefix(reuse)
            req.cached = reuse
            self.stats.reused_prompt_tokens += reuse
            if from_cache:
                self._cache.touch(best_store)
        else:
            req.store = KVStore()

    def _plan(self):
        """Rows of the next step: one per decoding sequence first, then prefill chunks (FIFO) up to step_tokens.

        Returns (rows, token ids, positions, [(request, row) whose logits pick its next token], request per segment).
        """
        segments, ids, positions, sample, owners = [], [], [], [], []
        decoding = [r for r in self._active if len(r.tokens) - r.computed == 1]
        prefilling = [r for r in self._active if len(r.tokens) - r.computed > 1]
        budget = self.step_tokens - len(decoding)
        row = 0
        for req in decoding + prefilling:
            start_pos = req.computed
            n = len(req.tokens) - start_pos
            if req in prefilling:
                if budget <= 0:
                    break
                n = min(n, budget)
                budget -= n
            segments.append((row, row + n, req.store, start_pos))
            owners.append(req)
            ids.extend(req.tokens[start_pos:start_pos + n])
            positions.extend(range(start_pos, start_pos + n))
            if start_pos + n == len(req.tokens):
                sample.append((req, row + n - 1))   # this row's logits give the request's next token
            row += n
        return StepRows(segments, self.exact), ids, positions, sample, owners

    async def _scheduler(self) -> None:
        try:
            await self._schedule()
        except BaseException as e:
            # Whatever stops the scheduler (aclose, the loop shutting down, a bug) must not leave callers waiting.
            why = "the backend was closed" if isinstance(e, asyncio.CancelledError) else f"{type(e).__name__}: {e}"
            if not isinstance(e, asyncio.CancelledError):
                log.exception("scheduler failed")
            err = BackendError(f"{self.name}: scheduler stopped ({why})")
            for req in list(self._active) + list(self._pending):
                req.finish = "error"
                req.queue.put_nowait(err)
            self._active, self._pending = [], deque()
            raise

    async def _schedule(self) -> None:
        assert self._wake is not None
        while True:
            for req in [r for r in self._active if r.cancelled]:
                self._finish(req, "cancelled")
            while self._pending and len(self._active) < self.max_batch:
                req = self._pending.popleft()
                if req.cancelled:
                    continue
                self._attach_prefix(req)
                self._active.append(req)
            if not self._active:
                self._wake.clear()
                await self._wake.wait()
                continue
            rows, ids, positions, sample, owners = self._plan()
            try:
                tokens = await asyncio.to_thread(self._step, rows, ids, positions, sample)
            except Exception as e:   # a failed forward pass fails the requests in it, not the backend
                log.exception("forward pass failed")
                err = BackendError(f"{self.name}: forward pass failed: {type(e).__name__}: {e}")
                for req in list(self._active):
                    req.queue.put_nowait(err)
                    req.finish = "error"
                self._active = []
                continue
            self._advance(rows, owners, sample, tokens)

    def _step(self, rows: StepRows, ids: list[int], positions: list[int], sample) -> list[int]:
        """One forward pass (worker thread): compute the rows, then pick each sampling row's next token."""
        import torch

        dev = self.device
        keep = torch.tensor([r for _, r in sample], device=dev) if sample else 1
        with torch.no_grad():
            out = self.model(input_ids=torch.tensor([ids], device=dev), position_ids=torch.tensor([positions],
                             device=dev), use_cache=False, sprint_rows=rows, logits_to_keep=keep)
            logits = out.logits[0]
            picks: list[int] = []
            greedy = [i for i, (req, _) in enumerate(sample) if req.params.temperature <= 0]
            argmax = logits[greedy].argmax(-1).tolist() if greedy else []
            g = iter(argmax)
            for i, (req, _) in enumerate(sample):
                if self.on_logits is not None:
                    self.on_logits(list(req.tokens), logits[i])
                picks.append(next(g) if req.params.temperature <= 0 else self._sample(logits[i], req))
        for start, end, store, pos0 in rows.segments:
            store.length = pos0 + end - start
        return picks

    @staticmethod
    def _sample(logits, req: _Request) -> int:
        import torch

        p = req.params
        probs = torch.softmax(logits.float().cpu() / p.temperature, dim=-1)
        if p.top_p < 1.0:
            sorted_p, order = probs.sort(descending=True)
            keep = sorted_p.cumsum(0) - sorted_p < p.top_p   # always keeps the most likely token
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
        return int(torch.multinomial(probs, 1, generator=req.generator))

    def _advance(self, rows: StepRows, owners: list[_Request], sample, tokens: list[int]) -> None:
        """After a step (event loop): count, append sampled tokens, emit text, finish sequences."""
        st = self.stats
        st.forward_passes += 1
        st.rows_computed += sum(e - s for s, e, _, _ in rows.segments)
        st.max_sequences_in_step = max(st.max_sequences_in_step, len(rows.segments))
        for (start, end, _, pos0), req in zip(rows.segments, owners):
            st.prefilled_tokens += max(0, min(pos0 + end - start, len(req.prompt_ids)) - pos0)
        now = time.perf_counter()
        for (req, _), tok in zip(sample, tokens):
            if req.cancelled:
                continue
            if req.first_token is None:
                req.first_token = now
            req.generated += 1
            st.generated_tokens += 1
            if tok in self.eos_ids:
                self._finish(req, "stop")
                continue
            req.tokens.append(tok)
            text = req.scanner.feed(self._detokenize(req))
            if text:
                req.queue.put_nowait(text)
            if req.scanner.hit is not None:
                self._finish(req, "stop")
            elif req.generated >= req.params.max_tokens or (self.max_positions and
                                                            len(req.tokens) >= self.max_positions):
                self._finish(req, "length")

    def _detokenize(self, req: _Request, final: bool = False) -> str:
        """New text since the last call; holds back an incomplete UTF-8 character (TGI's incremental decoding)
        unless `final`. Starting a few prompt tokens back keeps tokenizers that drop a leading space honest."""
        def dec(ids):
            # No clean-up of spaces: it may rewrite earlier text, and the text must be exactly what was generated.
            return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

        prefix = dec(req.tokens[req.prefix_offset:req.read_offset])
        full = dec(req.tokens[req.prefix_offset:])
        if len(full) > len(prefix) and (final or not full.endswith("\ufffd")):
            req.prefix_offset, req.read_offset = req.read_offset, len(req.tokens)
            return full[len(prefix):]
        return ""

    def _finish(self, req: _Request, reason: str) -> None:
        if req.finish is not None:
            return
        req.finish = reason
        if req in self._active:
            self._active.remove(req)
        if req.store is not None:
            self._cache.add(req.tokens, req.store)   # its KV (prompt and generation) serves later prompts
        if reason == "cancelled":
            return
        if req.scanner.hit is None:
            tail = req.scanner.feed(self._detokenize(req, final=True))
            if req.scanner.hit is None:
                tail += req.scanner.flush()
            if tail:
                req.queue.put_nowait(tail)
        end = time.perf_counter()
        first = req.first_token or end
        req.queue.put_nowait(Completion(
            text=req.scanner.text, generated_tokens=req.generated, prompt_tokens=len(req.prompt_ids),
            finish_reason=reason, stop_string=req.scanner.hit, ttft_s=first - req.submitted, decode_s=end - first,
            cached_prompt_tokens=req.cached))
        req.queue.put_nowait(_DONE)
