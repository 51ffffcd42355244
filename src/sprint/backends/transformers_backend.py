"""The in-process transformers backend: a causal LM from a local directory (or the hub), batched decoding with
continuous batching and a prefix KV cache; the offline default.

How it runs
-----------
Requests go to one scheduler task. Each *step* is one forward pass over a list of *rows*; a row is one token of one
sequence at its absolute position. Every sequence in its decode phase gets one row per step (the executors of a stage
decode side by side); prompts being prefilled fill the remaining rows in chunks (`step_tokens` rows per step in all),
so a newcomer's prefill never stalls the sequences already decoding, and new requests join at step boundaries
(continuous batching). The forward pass runs in a worker thread, so the event loop (the orchestrator, streaming
consumers) stays responsive, and the text of one step's tokens (detokenizing, stop strings, the callers' queues) is
emitted while the next step computes: a sequence that a stop string ends keeps one row in that step, whose token is
dropped (its KV is cached and its slot freed after the step).

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
whether its prefix KV came from the cache. Tests assert bitwise-equal logits.

The fast mode (default on GPU) uses the model's own linear layers and a slot cache instead of per-sequence stores: per
layer one buffer [slots, kv_heads, capacity, head_dim] (`SlotCache`; capacity doubles when a sequence outgrows it),
each running sequence owning a slot. A step writes all its rows' keys/values with one indexed store per layer; all
single-row segments (the decoding sequences) attend in ONE call per layer over the slot buffers with a key-length
mask (GQA folded into the query length, so no key copies): on a GPU two matrix products (`decode_attention`: SDPA's
kernels walk a slot's keys in one thread block per head), on a CPU, which computes every masked key,
`scaled_dot_product_attention` per run of `SLOT_GROUP` slots, each up to its own longest sequence. Only multi-row
prefill chunks get a call each. Prefix reuse copies the matching rows into the new slot; a finished sequence's rows are
copied out into the prefix cache and its slot is freed (the buffers themselves are dropped when the backend idles).
Same results as exact mode up to floating-point noise, as with vLLM.

Per step the host and the device meet twice, whatever the context length: ONE host-to-device copy of every index
the step needs (token ids, positions, rows to keep, KV write slots, slot lengths; from pinned memory, asynchronous)
and ONE device-to-host read of the picked tokens (`.tolist()`, the step's only synchronisation; sampling rows add
one read of their logits). Forward passes run in one dedicated worker thread, so thread-local state (cuBLAS
handles, cuDNN's plan caches) is built once, not again whenever the event loop's shared pool hands the step to
another thread. On a GPU the fast path keeps scaled_dot_product_attention off cuDNN (`AVOID_CUDNN_SDPA`): recent
PyTorch prefers cuDNN on H100/H200, and cuDNN builds (and may JIT-compile) an execution plan per distinct shape,
while every decode step attends over one key more than the last, so each step would pay for a new plan;
flash/memory-efficient kernels take any length.

A small model's decode step is bound by the host (Python and kernel launches: 7-9 ms per step for the bundled
Countdown models on an H200, whatever the batch). So on CUDA the fast mode replays steps from CUDA graphs captured
per (row bucket, rows per slot, buffer capacity, key bucket, steps) (`sprint.backends.decode_graphs`;
`cuda_graphs=False` turns it off): decode steps (greedy ones `decode_steps` at a time), steps whose prefills are
short (a SPRINT executor's prompt after its reused prefix), and a lone sequence's long prefill (the planner reading a
stage's executions). Other long prefills stay eager, in one step when nothing else decodes (`LONE_PREFILL_TOKENS`).
`warmup()` captures them before a timed run. Measured on an H200: 12.5
-> 1.0 ms per decode step at batch 1, 14.6 -> 1.3 ms at 16 (`benchmarks/bench_decode.py --modes fast graphs`,
BENCHMARKS.md).

Text
----
A prompt that extends an earlier one (a SPRINT stage's planner and executors) reuses that prompt's ids up to its last
safe added token and tokenizes only the rest (`sprint.backends.prompt_ids`; exact, and off for tokenizers where it
would not be). Tokens are detokenized incrementally (with a few prompt tokens of context, so leading spaces come out
right); stop strings are found on the text, also across token borders, cut exactly, and never emitted. EOS (the
tokenizer's and the generation config's) ends a sequence. Greedy when temperature == 0, else sampling (temperature,
top_p) with a per-request generator seeded by `params.seed`, so sampled outputs do not depend on the batch either.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import random
import time
import types
from collections import OrderedDict, deque
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator

from sprint.backends.base import BackendError, Completion, CompletionStream, GenerationParams
from sprint.backends.decode_attention import decode_attention
from sprint.backends.decode_attention import probe as probe_decode_attention
from sprint.backends.fuse import fuse_projections
from sprint.backends.rope import install_token_major_rope
from sprint.backends.prompt_ids import PromptIds
from sprint.backends.stops import StopScanner

log = logging.getLogger(__name__)

ATTENTION_NAME = "sprint_rows"
# Buffer generations of every SlotCache in the process: unique, so a graph bound to one cache's buffers can never
# match a newer allocation (`sprint.backends.decode_graphs`).
_GENERATIONS = itertools.count(1)

#: Greedy decode steps per CUDA-graph replay (`decode_steps`): the host's per-step work paid once per this many
#: tokens; a request that ends inside the block wastes the rest of it (at most DECODE_STEPS - 1 steps). 8 against 4
#: on an H200 (BENCHMARKS.md, 2026-11-28): one problem at a time, the bundled Countdown models' solves 0.92x
#: (SPRINT) and 0.87x (sequential) the wall-clock; 64 problems in flight, 256 problems in 0.89x the time (SPRINT)
#: and 0.86x the mean wall-clock per problem (sequential); the same answers.
DECODE_STEPS = 8
#: Take blocks of `decode_steps` also while requests wait for a full batch (else one step at a time then, so that a
#: finished request's slot goes to a waiting one at once). With 64 Countdown problems in flight a SPRINT run keeps the
#: 128-row batch full, so without blocks every pass was one step, paying the host's per-pass work for every token:
#: with them the run took 0.70x the time (H200, 256 problems, the same answers but for near-ties; BENCHMARKS.md,
#: 2026-11-28). A waiting request then waits up to a block (8 steps) for a slot.
FULL_BATCH_BLOCKS = True
#: Blocks of decode steps also in passes where a prefill joins: the decoding rows take `decode_steps` steps while
#: the prefill takes one, where CUDA graphs split the step (a prompt joining 100-odd decoding rows:
#: `decode_graphs.partition`); the request that joined decodes from the next pass on. Why: with 64 Countdown
#: problems in flight every admission made a one-step pass of the whole batch (a trace on an H200: 7 such passes
#: per SPRINT problem at about 4.5 ms each, half of the run's time; BENCHMARKS.md, 2026-11-28). Off: timed on an
#: H200 it made that SPRINT run 1.115x slower (512 problems, 64 in flight; the sequential model 1.000x) and one
#: problem at a time it changed nothing (0.993x [0.972, 1.007]); the joining request waits up to a block longer for
#: its second token (BENCHMARKS.md, "the ratio taken apart", sixth session).
SPLIT_BLOCKS = False
#: Fast mode: prefill rows a step takes besides its decoding rows (`step_tokens` defaults to max_batch + this). A
#: SPRINT planner's read of a stage's executions (about 1,400 tokens for the bundled Countdown model) takes
#: ceil(1,400 / this) steps among decoding rows (with CUDA graphs, split steps: `decode_graphs`; 2,048 gained nothing
#: there with 64 problems in flight, BENCHMARKS.md 2026-11-28; without graphs, eager steps of the whole batch).
PREFILL_TOKENS_PER_STEP = 512
#: Fast mode: prefill rows one step may take when no sequence is decoding (then `step_tokens` protects no one).
LONE_PREFILL_TOKENS = 4096
#: Seconds the scheduler, with nothing running, waits for a request extending one that just finished before keeping
#: the finished ones' KV (`_schedule`): a SPRINT orchestrator's next call came 0.3-2 ms after a stage's end (H100,
#: H200 and the CI-class CPU; BENCHMARKS.md).
IDLE_KEEP_S = 0.005
# CPU fast mode: decoding slots attend in runs of this many, each up to its own longest sequence (`_slot_rows`).
SLOT_GROUP = 4

# Keep scaled_dot_product_attention off cuDNN on CUDA devices during forward passes (see module doc); a benchmark
# may set it to False to compare with PyTorch's own choice.
AVOID_CUDNN_SDPA = True
# On CUDA the decoding rows attend through `sprint.backends.decode_attention` (two matrix products that spread the keys
# over the GPU; SDPA's kernels walk them in 4 thread blocks per slot for these models); False: SDPA, for comparison.
MATMUL_DECODE_ATTENTION = True
# On CUDA (fast mode) each layer's q/k/v and gate/up projections run as one product each (`sprint.backends.fuse`).
FUSE_PROJECTIONS = True
# CUDA fast mode: rotary embeddings computed on token-major views (`sprint.backends.rope`; bit-identical results,
# contiguous kernels when several sequences decode together).
TOKEN_MAJOR_ROPE = True
#: CUDA fast mode: RMSNorm, rotary embeddings, SiLU x up, the KV write and the decode attention as fused
#: Triton kernels (`sprint.backends.kernels`; needs Triton, else the usual PyTorch kernels run). Why: a small model's
#: graph step is a chain of ~400 tiny kernels, and PyTorch's elementwise ones cost more at several rows than at one.
FUSED_KERNELS = True


def _fused_kernels():
    """`sprint.backends.kernels` when FUSED_KERNELS is on and Triton imports, else None."""
    if not FUSED_KERNELS:
        return None
    try:
        from sprint.backends import kernels
    except ImportError:
        return None
    return kernels


# ---------------------------------------------------------------------------------------------- KV storage
def _capacity(n: int, least: int = 256) -> int:
    """`least` doubled until it holds `n`: buffers grow a few times per run, not at every new position or slot.
    A function of `n` only, so a sequence's buffers have the same strides whatever its history."""
    cap = least
    while cap < n:
        cap *= 2
    return cap


class KVStore:
    """Keys and values of one sequence, per layer: tensors [kv_heads, capacity, head_dim], grown by doubling."""

    def __init__(self) -> None:
        self.keys: dict[int, Any] = {}
        self.values: dict[int, Any] = {}
        self.length = 0   # positions whose KV is written in every layer
        # Every layer's keys and values as views of these [layers, kv_heads, n, head_dim] (`SlotCache.export` of a
        # stacked cache): copied back into slots in one copy each.
        self.stacked: tuple[Any, Any] | None = None

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

    segments: list[tuple[int, int, Any, int]]   # (first row, end row, KVStore or SlotSeq, position of the first row)
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
    if isinstance(sprint_rows, SlotRows):
        return slot_attention(module, query, key, value, sprint_rows, scaling, sliding_window)
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


# ---------------------------------------------------------------------------------------------- fast mode: slot cache
@dataclass
class SlotSeq:
    """A running sequence's place in the `SlotCache` (fast mode): its slot and how many positions are written."""

    slot: int
    length: int = 0


class SlotCache:
    """Fast-mode KV of all running sequences: per layer keys and values [rows, kv_heads, capacity, head_dim].

    Buffers are created at the first write of each layer (shape, dtype and device from the model's own keys), grown by
    doubling the capacity and the number of slot rows (up to `slots`), and zero-filled: masked-out keys get weight 0,
    and 0 * NaN from uninitialised memory would still poison the output. Why the rows grow too: allocating all
    `slots` (128 on a GPU) at a long prompt's capacity zero-fills gigabytes and made a staged run (few sequences,
    long contexts) 2.8x slower on a CPU; a run only pays for the slots it uses.

    With `layers` (the model's layer count) the layers' buffers are views of one stacked tensor each for keys and
    values, [layers, rows, kv_heads, capacity, head_dim], all allocated at the first write: copying a sequence's
    prefix into a new slot, or out of it for the prefix cache, is then one copy of keys and one of values instead
    of one per layer (sixteen launches for the bundled 8-layer model: 0.45 ms of host work per admission that
    copies, and 1.1 ms per export, in a trace on an H200 host). A layer whose keys do not match the stack (shape,
    dtype or device) gets buffers of its own, and copies go layer by layer from then on."""

    def __init__(self, slots: int, kernels: Any = None, layers: int | None = None) -> None:
        self.slots = slots
        self.kernels = kernels   # `sprint.backends.kernels` for the KV write and decode attention, or None
        self.layers = layers
        self.keys: dict[int, Any] = {}
        self.values: dict[int, Any] = {}
        self.stack: tuple[Any, Any] | None = None   # every layer's (keys, values) as views of these
        self._mixed = False   # some layer has buffers outside the stack: copies go layer by layer
        self.free = list(range(slots))
        self.generation = next(_GENERATIONS)   # changes whenever a buffer is allocated or dropped
        # slot -> (source slot, n): the slot's first n positions are a copy of the source slot's, which holds them
        # in its own buffer rows as long as it keeps its sequence (`copy_prefix`, `release`). The split decode
        # attention reads shared positions from the source: the copies of a SPRINT stage's prefix (its planner's
        # text, copied by each executor) are then one piece of memory, served from the GPU's L2 cache.
        self.source: dict[int, tuple[int, int]] = {}

    def acquire(self) -> SlotSeq:
        # The lowest free slot: running sequences stay packed at the front, so the decode attention (over slots
        # 0 .. highest used) computes few idle slots.
        slot = min(self.free)
        self.free.remove(slot)
        self.source.pop(slot, None)
        return SlotSeq(slot)

    def release(self, seq: SlotSeq) -> None:
        if seq.slot not in self.free:
            self.free.append(seq.slot)
        self.source.pop(seq.slot, None)
        # Slots that read their prefix from this one read it from the one of them holding the longest copy: each
        # agrees with it up to its own length (both are copies of this slot's positions).
        children = [c for c, (src, _) in self.source.items() if src == seq.slot]
        if children:
            root = max(children, key=lambda c: self.source[c][1])
            del self.source[root]
            for c in children:
                if c != root:
                    self.source[c] = (root, self.source[c][1])

    def truncate(self, seq: SlotSeq, n: int) -> None:
        """Keep only the first `n` positions of a sequence's slot (a new request taking over a finished one's KV):
        the later ones will be overwritten, so no slot reads them as a shared prefix any more."""
        seq.length = min(seq.length, n)
        for slot, (src, m) in list(self.source.items()):
            if slot == seq.slot or src == seq.slot:
                self.source[slot] = (src, min(m, seq.length))

    def shares(self, slot: int) -> tuple[int, int]:
        """(source slot, n): the slot's first n positions may be read from the source slot ((slot, 0): none)."""
        return self.source.get(slot, (slot, 0))

    def idle(self) -> bool:
        return len(self.free) == self.slots

    def clear(self) -> None:
        """Drop the buffers (no sequence is running): their memory goes back to the allocator."""
        self.keys, self.values, self.stack, self._mixed = {}, {}, None, False
        self.source.clear()
        self.generation = next(_GENERATIONS)

    def ensure(self, layer: int, like_k, like_v, needed: int, slots: int = 1) -> None:
        """Make `layer`'s buffers hold at least `needed` positions for slots 0 .. `slots`-1; `like_*`
        ([.., kv_heads, n, head_dim]) give the shape, dtype and device."""
        buf = self.keys.get(layer)
        if buf is not None and (buf.shape[1] != like_k.shape[-3] or buf.shape[3] != like_k.shape[-1]
                                or buf.dtype != like_k.dtype):
            buf = None   # a stack's view that this layer's keys do not fit (it holds nothing of the layer's yet)
        if buf is not None and buf.shape[2] >= needed and buf.shape[0] >= slots:
            return
        cap = max(_capacity(needed), buf.shape[2] if buf is not None else 0)
        rows = min(self.slots, max(_capacity(slots, least=8), buf.shape[0] if buf is not None else 0))
        if self._fits_stack(layer, like_k, like_v):
            self._grow_stack(like_k, like_v, rows, cap)
            return
        if self.layers:
            self._mixed, self.stack = True, None   # the views keep their memory until each layer grows
        nk = like_k.new_zeros(rows, like_k.shape[-3], cap, like_k.shape[-1])
        nv = like_v.new_zeros(rows, like_v.shape[-3], cap, like_v.shape[-1])
        if buf is not None:
            n_rows, old = buf.shape[0], buf.shape[2]
            nk[:n_rows, :, :old] = buf
            nv[:n_rows, :, :old] = self.values[layer]
        self.keys[layer], self.values[layer] = nk, nv
        self.generation = next(_GENERATIONS)

    def _fits_stack(self, layer: int, like_k, like_v) -> bool:
        """Whether `layer`'s buffers are views of the stack (or become so): layers known, none outside the stack,
        and keys like the stack's (or no buffers yet)."""
        if not self.layers or self._mixed or not 0 <= layer < self.layers or like_k.shape != like_v.shape:
            return False
        if self.stack is None:
            return not self.keys
        k = self.stack[0]
        return (k.shape[2] == like_k.shape[-3] and k.shape[4] == like_k.shape[-1] and k.dtype == like_k.dtype
                == like_v.dtype and k.device == like_k.device)

    def _grow_stack(self, like_k, like_v, rows: int, cap: int) -> None:
        """The stack allocated at `rows` x `cap` (`ensure` sizes it, never below the old one), the old one's
        contents kept, and every layer's views."""
        old = self.stack
        new = tuple(like.new_zeros(self.layers, rows, like.shape[-3], cap, like.shape[-1])
                    for like in (like_k, like_v))
        if old is not None:
            for n, o in zip(new, old):
                n[:, :o.shape[1], :, :o.shape[3]] = o
        self.stack = new
        for layer in range(self.layers):
            self.keys[layer], self.values[layer] = new[0][layer], new[1][layer]
        self.generation = next(_GENERATIONS)

    def _stacked(self, slots: int, n: int) -> bool:
        """Whether copies can go through the stack: every layer in it, grown (`ensure`) to `slots` slots and `n`
        positions."""
        if self.stack is None or self._mixed:
            return False
        self.ensure(0, self.keys[0], self.values[0], n, slots)   # the stack's views: every layer grows with it
        return True

    def copy_prefix(self, source: "SlotSeq | KVStore", dest: SlotSeq, n: int) -> None:
        """Copy the first `n` positions of a running sequence's slot or of a finished sequence's store into `dest`."""
        if isinstance(source, SlotSeq):
            if self._stacked(dest.slot + 1, n):
                k, v = self.stack
                k[:, dest.slot, :, :n] = k[:, source.slot, :, :n]
                v[:, dest.slot, :, :n] = v[:, source.slot, :, :n]
            else:
                for layer in list(self.keys):   # (dest may be a new row)
                    self.ensure(layer, self.keys[layer], self.values[layer], n, dest.slot + 1)
                    k = self.keys[layer]
                    k[dest.slot, :, :n] = k[source.slot, :, :n]
                    self.values[layer][dest.slot, :, :n] = self.values[layer][source.slot, :, :n]
            root, shared = self.shares(source.slot)
            self.source[dest.slot] = (root, n) if n <= shared else (source.slot, n)
        elif source.stacked is not None and len(source.keys) == self.layers and self._stacked(dest.slot + 1, n):
            self.source.pop(dest.slot, None)
            k, v = self.stack
            k[:, dest.slot, :, :n] = source.stacked[0][:, :, :n]
            v[:, dest.slot, :, :n] = source.stacked[1][:, :, :n]
        else:
            self.source.pop(dest.slot, None)
            for layer, k in source.keys.items():
                self.ensure(layer, k, source.values[layer], n, dest.slot + 1)
                self.keys[layer][dest.slot, :, :n] = k[:, :n]
                self.values[layer][dest.slot, :, :n] = source.values[layer][:, :n]
        dest.length = n

    def export(self, seq: SlotSeq) -> KVStore:
        """A copy of the sequence's positions as a `KVStore` (for the prefix cache; the slot can then be reused)."""
        out = KVStore()
        n = seq.length
        if self.stack is not None and not self._mixed:
            k, v = (t[:, seq.slot, :, :n].clone() for t in self.stack)
            out.stacked = (k, v)
            for layer in range(self.layers):
                out.keys[layer], out.values[layer] = k[layer], v[layer]
        else:
            for layer, k in self.keys.items():
                out.keys[layer] = k[seq.slot, :, :n].clone()
                out.values[layer] = self.values[layer][seq.slot, :, :n].clone()
        out.length = n
        return out


@dataclass
class SlotRows:
    """A fast-mode step plan (built once per step, used by every layer): where each row's KV goes, which rows decode
    in the batched call, and the prefill chunks. `_slot_rows` fills the index fields with host lists; `_step` moves
    them to the model's device together with the step's other inputs, in one copy (`bind`)."""

    cache: SlotCache
    capacity: int             # positions the buffers must hold after this step
    slots: int                # slot rows the buffers must have (highest slot in this step + 1)
    write_slot: Any           # [rows] slot of each row
    write_pos: Any            # [rows] position of each row
    single_rows: Any          # [B] rows that are a whole segment (decoding sequences)
    single_slots: Any         # [B] their slots
    lengths: Any              # [span] keys each slot attends to in the batched call (1 for idle slots: no NaN)
    span: int                 # slots 0 .. span-1 take part in the batched call
    max_len: int              # the longest key length among them
    chunks: list[tuple[int, int, int, int]]   # multi-row segments: (first row, end row, slot, first position)
    full: bool = False        # every slot in the span decodes and has max_len keys: no mask needed
    aligned: bool = False     # no chunks and row i is slot i's decoding row: no scatter/gather of queries needed
    queries: int = 1          # aligned only: rows per slot (row s * queries + j is slot s's j-th; the CUDA-graph
                              # step with short prefills), `lengths` then one per row
    groups: list[tuple[int, int, int, bool]] | None = None   # CPU: (first slot, end slot, keys, all slots that long)
                                                              # per batched call
    shared: Any = None        # (source slot [span], positions [span]) from `SlotCache.shares`, for the split decode
                              # attention (CUDA graphs' steps), or None
    slot_of: Any = None       # [1]: the slot a one-slot step's rows belong to, read on the device (a CUDA graph
                              # that serves any slot's prefill, `decode_graphs._mapped`), or None: slot 0 .. span-1
    _masks: dict = field(default_factory=dict)

    def index_lists(self) -> list[list[int]]:
        """The host index lists that `bind` replaces by device tensors (write_pos is the step's positions)."""
        return [self.write_slot, self.single_rows, self.single_slots, self.lengths]

    def bind(self, write_slot, write_pos, single_rows, single_slots, lengths) -> "SlotRows":
        self.write_slot, self.write_pos, self.single_rows, self.single_slots, self.lengths = (
            write_slot, write_pos, single_rows, single_slots, lengths)
        return self

    def single_mask(self, sliding_window: int | None, group: int = 1):
        """[span, 1, 1, max_len]: key k is visible to slot s's query iff k < length[s] (and inside the window);
        None when that is every key (SDPA is faster without a mask, notably at batch 1). With `queries` rows per
        slot, [span, 1, queries * group, max_len]: each row's own mask for each of its `group` query heads."""
        if self.full and (not sliding_window or sliding_window >= self.max_len):
            return None
        key = ("single", sliding_window)
        if key not in self._masks:
            import torch

            kpos = torch.arange(self.max_len, device=self.lengths.device)[None, :]
            mask = kpos < self.lengths[:, None]
            if sliding_window:
                mask &= kpos >= self.lengths[:, None] - sliding_window
            if self.queries == 1:
                self._masks[key] = mask[:, None, None, :]
            else:   # [span * queries, max_len] -> [span, 1, queries * group, max_len], each row's mask `group` times
                mask = mask.view(self.span, self.queries, 1, self.max_len).expand(-1, -1, group, -1)
                self._masks[key] = mask.reshape(self.span, 1, self.queries * group, self.max_len)
        return self._masks[key]

    def chunk_mask(self, i: int, sliding_window: int | None):
        """[1, 1, n, hi]: causal mask of prefill chunk `i` over its sequence's keys 0 .. hi-1."""
        key = (i, sliding_window)
        if key not in self._masks:
            import torch

            start, end, _, pos0 = self.chunks[i]
            hi = pos0 + end - start
            dev = self.lengths.device
            qpos = torch.arange(pos0, hi, device=dev)[:, None]
            kpos = torch.arange(hi, device=dev)[None, :]
            mask = kpos <= qpos
            if sliding_window:
                mask &= kpos > qpos - sliding_window
            self._masks[key] = mask[None, None]
        return self._masks[key]


def _batched_decode_attention(q, ks, vs, rows: SlotRows, sliding_window, scaling):
    """The decoding rows' attention, q [span, kv_heads, group, head_dim] in slot order: one call over every slot's
    keys up to the longest (the GPU: one launch), or on the CPU one call per run of slots (`rows.groups`), each up
    to its own longest, so a short sequence next to a long one does not pay for the long one's keys (a CPU computes
    every masked key). Slices of consecutive slots are views: no key is copied."""
    import torch.nn.functional as F

    mask = rows.single_mask(sliding_window, q.shape[2] // rows.queries)
    if rows.slot_of is not None:
        # The slot's keys up to the step's key bucket, copied out (a few MB at most for a small model: the prefills
        # such graphs take are rare next to decode steps, which never pay this).
        ks = ks[:, :, :rows.max_len].index_select(0, rows.slot_of)
        vs = vs[:, :, :rows.max_len].index_select(0, rows.slot_of)
    if q.is_cuda and MATMUL_DECODE_ATTENTION:
        return decode_attention(q, ks[:rows.span, :, :rows.max_len], vs[:rows.span, :, :rows.max_len], mask, scaling,
                                rows.cache.kernels, rows.shared)
    if not rows.groups:
        return F.scaled_dot_product_attention(q, ks[:rows.span, :, :rows.max_len], vs[:rows.span, :, :rows.max_len],
                                              attn_mask=mask, scale=scaling)
    out = q.new_empty(q.shape)
    for a, b, n, full in rows.groups:
        # A run whose slots all attend to exactly n keys needs no mask (SDPA's faster path), unless a window cuts it.
        m = None if mask is None or (full and (not sliding_window or sliding_window >= n)) else mask[a:b, :, :, :n]
        out[a:b] = F.scaled_dot_product_attention(q[a:b], ks[a:b, :, :n], vs[a:b, :, :n], attn_mask=m,
                                                  scale=scaling)
    return out


def slot_attention(module, query, key, value, rows: SlotRows, scaling, sliding_window):
    """Fast-mode attention (see module doc): one indexed KV write, one batched call for all decoding rows, one call
    per prefill chunk. Returns [1, rows, heads, head_dim]."""
    import torch.nn.functional as F

    layer = module.layer_idx
    cache = rows.cache
    cache.ensure(layer, key, value, rows.capacity, rows.slots)
    ks, vs = cache.keys[layer], cache.values[layer]
    new_k, new_v = key[0].transpose(0, 1), value[0].transpose(0, 1)   # [rows, kv_heads, head_dim]
    kernels = cache.kernels
    if kernels is not None and kernels.kv_write_fits(ks, vs, new_k, new_v):
        kernels.kv_write(ks, vs, new_k, new_v, rows.write_slot, rows.write_pos)   # both in one kernel
    else:
        # Advanced indices split by a slice put the indexed dimension first: [rows, kv_heads, head_dim].
        ks[rows.write_slot, :, rows.write_pos] = new_k
        vs[rows.write_slot, :, rows.write_pos] = new_v
    heads, kv_heads, dim = query.shape[1], key.shape[1], query.shape[3]
    if rows.aligned and rows.queries == 1:
        # A decode-only step whose rows are slots 0 .. span-1 in order: the queries are already in slot order.
        o = _batched_decode_attention(
            query[0].transpose(0, 1).reshape(rows.span, kv_heads, heads // kv_heads, dim), ks, vs, rows,
            sliding_window, scaling)
        return o.reshape(1, rows.span, heads, dim), None
    if rows.aligned:
        # `queries` rows per slot (a CUDA-graph step with short prefills): slot s's rows, each with its own key
        # length, become the query rows of slot s's call, every query head of a KV head per row (GQA folded in).
        group, n = heads // kv_heads, rows.queries
        q = query[0].transpose(0, 1).reshape(rows.span, n, kv_heads, group, dim).transpose(1, 2)
        o = _batched_decode_attention(q.reshape(rows.span, kv_heads, n * group, dim), ks, vs, rows, sliding_window,
                                      scaling)
        return o.view(rows.span, kv_heads, n, group, dim).transpose(1, 2).reshape(1, rows.span * n, heads, dim), None
    out = query.new_zeros(query.shape[2], heads, dim)
    if rows.single_rows.numel():
        # Scatter the decoding rows' queries to their slots; GQA: the `heads // kv_heads` query heads sharing a KV
        # head become that head's query rows (the same head order as transformers' repeat_kv), so the call runs
        # without repeating keys and on kernels that take a boolean mask.
        q = query.new_zeros(rows.span, heads, dim)
        q[rows.single_slots] = query[0, :, rows.single_rows].transpose(0, 1)
        o = _batched_decode_attention(q.view(rows.span, kv_heads, heads // kv_heads, dim), ks, vs, rows,
                                      sliding_window, scaling)
        out[rows.single_rows] = o.reshape(rows.span, heads, dim)[rows.single_slots]
    gqa = heads != kv_heads
    for i, (start, end, slot, pos0) in enumerate(rows.chunks):
        hi = pos0 + end - start
        o = F.scaled_dot_product_attention(
            query[:, :, start:end], ks[slot:slot + 1, :, :hi], vs[slot:slot + 1, :, :hi],
            attn_mask=rows.chunk_mask(i, sliding_window), scale=scaling, enable_gqa=gqa)
        out[start:end] = o[0].transpose(0, 1)
    return out[None], None


@contextlib.contextmanager
def _cudnn_sdpa_off(torch):
    """scaled_dot_product_attention may pick flash, memory-efficient or math kernels, not cuDNN, inside."""
    before = torch.backends.cuda.cudnn_sdp_enabled()
    torch.backends.cuda.enable_cudnn_sdp(False)
    try:
        yield
    finally:
        torch.backends.cuda.enable_cudnn_sdp(before)


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
    graph_steps: int = 0             # decode steps replayed from a CUDA graph (cuda_graphs=True)


@dataclass(eq=False)   # identity semantics: requests are compared as objects, never field by field
class _Request:
    prompt_ids: list[int]
    params: GenerationParams
    queue: asyncio.Queue
    submitted: float
    tokens: list[int] = field(default_factory=list)
    store: KVStore | SlotSeq | None = None   # SlotSeq in fast mode
    cached: int = 0
    generated: int = 0
    scanner: StopScanner | None = None
    prefix_offset: int = 0
    read_offset: int = 0
    first_token: float | None = None
    finish: str | None = None
    cancelled: bool = False
    generator: Any = None
    token_array: Any = None   # numpy copy of a prefix of `tokens`, extended as prefix lookups need (`_tokens_upto`)

    @property
    def computed(self) -> int:
        return self.store.length if self.store is not None else 0

    @property
    def kept(self) -> int:
        """Positions whose KV belongs to the kept tokens: a multi-step block may have run on past an EOS, a limit or a
        stop string, writing keys of tokens that were then dropped."""
        return min(self.computed, len(self.tokens))


class _PrefixCache:
    """Finished sequences' token ids and KV, least recently used first out, bounded by total tokens.

    Token ids are kept as numpy arrays: every new request and every finished one is compared with each entry, and
    turning a Python list of a few thousand ids into an array cost more than the comparison (about 9 ms for 30
    entries of a SPRINT context per lookup, on the event loop's thread between two steps; 0.5 ms with arrays)."""

    def __init__(self, max_tokens: int):
        self.max_tokens = max_tokens
        self.entries: OrderedDict[int, tuple[Any, KVStore]] = OrderedDict()
        self._next = 0
        self.tokens = 0

    def clear(self) -> None:
        self.entries.clear()
        self.tokens = 0

    def add(self, tokens: list[int], store: KVStore) -> None:
        import numpy as np

        n = store.length
        if n == 0 or self.max_tokens <= 0:
            return
        tokens = np.asarray(tokens[:n], dtype=np.int64)
        for key, (toks, st) in list(self.entries.items()):
            # Only two relations matter (one extends the other), each ruled out by one lookup for most entries.
            k = min(n, len(toks)) - 1
            if toks[k] != tokens[k]:
                continue
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


def _settle(future) -> None:
    """Resolve `future` (event loop thread) unless it already is."""
    if not future.done():
        future.set_result(None)


def _settle_done(future, _done) -> None:
    """Done-callback form of `_settle` (bound to its own future: the scheduler's variable moves on to the next)."""
    _settle(future)


def _settle_from_thread(loop, future) -> None:
    """Resolve `future` from another thread (a loop already closed has no one waiting)."""
    try:
        loop.call_soon_threadsafe(_settle, future)
    except RuntimeError:
        pass


def _common_prefix(a, b) -> int:
    """Length of the common prefix of two token id sequences (lists or numpy arrays; arrays are not copied)."""
    import numpy as np

    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = np.nonzero(np.asarray(a[:n]) != np.asarray(b[:n]))[0]
    return int(diff[0]) if len(diff) else n


def _tokens_upto(req: "_Request", n: int):
    """`req.tokens[:n]` as a numpy array, converting only what earlier calls did not: every executor joining a SPRINT
    stage compares its prompt with each running sequence (thousands of tokens each), and converting whole lists each
    time cost up to a millisecond per join. A running request's tokens before its computed length never change."""
    import numpy as np

    arr = req.token_array
    if arr is None or len(arr) < n:
        have = 0 if arr is None else len(arr)
        tail = np.asarray(req.tokens[have:n], dtype=np.int64)
        arr = req.token_array = tail if arr is None else np.concatenate([arr, tail])
    return arr[:n]


_DONE = object()


# ---------------------------------------------------------------------------------------------- backend
class TransformersBackend:
    """In-process backend: continuous batching, prefix KV reuse, exact stop strings (see module doc).

    `max_batch` sequences run at once (more wait in a queue; default 128 on a GPU, 8 on the CPU); a step computes at
    most `step_tokens` rows (default: 64 in exact mode, max_batch + `PREFILL_TOKENS_PER_STEP` in fast mode, so a
    newcomer's prefill is not starved by a full batch of decoding sequences); `exact` (default: on CPU) selects the
    batch-invariant mode; `prefix_cache_tokens` bounds the finished sequences kept for reuse. A `model` object given
    directly is adapted in place (attention function, and tiled linears when exact).
    `cuda_graphs` (fast mode on CUDA only; the default there) replays decode steps and short prefills from CUDA graphs
    (`sprint.backends.decode_graphs`); False decodes eagerly. `decode_steps` (with CUDA graphs; default
    `DECODE_STEPS`) runs that many greedy decode steps per graph replay when every running request is greedy and has
    room for them: the host then meets the device once per that many tokens.
    """

    def __init__(self, model_name_or_path: str | Path | None = None, *, device: str = "auto", dtype: str = "auto",
                 max_batch: int | None = None, step_tokens: int | None = None, exact: bool | None = None,
                 tile_rows: int = 8,
                 prefix_cache_tokens: int = 65536, add_special_tokens: bool | None = None,
                 trust_remote_code: bool = False, extra_eos_ids=(), on_logits=None, model=None, tokenizer=None,
                 cuda_graphs: bool | None = None, decode_steps: int | None = None):
        import torch

        if model is None:
            if model_name_or_path is None:
                raise ValueError("model_name_or_path: give a local model directory or hub name (or model=...)")
            model, tokenizer = self._load(model_name_or_path, device, dtype, trust_remote_code, tokenizer)
        elif tokenizer is None:
            raise ValueError("tokenizer: required when a model object is given")
        self.model, self.tokenizer = model, tokenizer
        # Prompts extend earlier prompts (a SPRINT stage's planner and executors): their ids are reused, exactly.
        self._prompt_ids = PromptIds(tokenizer, keep=64)   # a SPRINT stage: 8 prompts and up to 7 prepared texts
        # A fast tokenizer's own (Rust) tokenizer: `_decode_ids` calls it directly, twice per token per stream.
        self._rust_tokenizer = getattr(tokenizer, "backend_tokenizer", None)
        self.name = str(model_name_or_path or getattr(model.config, "_name_or_path", "model"))
        self.device = next(model.parameters()).device
        if max_batch is None:
            # A GPU step costs about the same for 1 or 128 sequences; a CPU step grows with the batch.
            max_batch = 128 if self.device.type == "cuda" else 8
        if max_batch < 1:
            raise ValueError(f"max_batch: must be >= 1, got {max_batch}")
        self.max_batch = max_batch
        self.exact = (self.device.type == "cpu") if exact is None else exact
        if step_tokens is None:
            step_tokens = 64 if self.exact else max_batch + PREFILL_TOKENS_PER_STEP
        self.step_tokens = max(step_tokens, max_batch + 1)
        # Fast mode's KV (unused in exact mode); the layers' buffers stacked when the config gives their number.
        self._slots = SlotCache(max_batch, layers=getattr(getattr(model, "config", None), "num_hidden_layers", None))
        self.fused_kernels: dict[str, int] = {}   # modules whose forward runs fused kernels (`FUSED_KERNELS`)
        self.tile_rows = tile_rows
        self.add_special_tokens = add_special_tokens
        self.stats = BackendStats()
        self.max_positions = getattr(model.config, "max_position_embeddings", None)
        self.eos_ids = self._eos_ids() | {int(i) for i in extra_eos_ids}
        # Observer called in the worker thread with (token ids so far, next-token logits) for every sampled token;
        # for debugging and for tests that compare logits bit for bit.
        self.on_logits = on_logits
        self._cache = _PrefixCache(prefix_cache_tokens)
        self._stop_token_cache: dict[tuple[str, ...], frozenset[int]] = {}   # `_stop_ids`
        self._prepare_model(torch)
        if self.device.type == "cuda":
            probe_decode_attention(self.device)   # settled here, never inside a CUDA-graph capture
        self._graphs = None
        if cuda_graphs is None:
            cuda_graphs = not self.exact and self.device.type == "cuda"
        if cuda_graphs:
            if self.exact or self.device.type != "cuda":
                raise ValueError("cuda_graphs: needs the fast mode on a CUDA device (exact=False, device cuda)")
            from sprint.backends.decode_graphs import DecodeGraphs

            self._graphs = DecodeGraphs(self)
        if decode_steps is not None and decode_steps < 1:
            raise ValueError(f"decode_steps: must be >= 1, got {decode_steps}")
        # Read at every step, so a test may set it on a backend whose graphs it swapped in.
        self.decode_steps = (DECODE_STEPS if self._graphs is not None else 1) if decode_steps is None else decode_steps
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._pending: deque[_Request] = deque()
        self._active: list[_Request] = []
        self._wake: asyncio.Event | None = None
        self._stepping = False   # a forward pass is running (the event loop emits text meanwhile: `_schedule`)
        # Finished requests whose KV is still to be kept (prefix cache) and freed: after the next launch (`_schedule`).
        self._deferred: list[_Request] = []
        # Forward passes run in this one thread (started at the first step), not in the event loop's shared pool.
        # Its current CUDA device is the model's: Triton kernels and CUDA graphs run on the thread's current device,
        # whatever device their tensors are on (a model on cuda:1 would otherwise launch them on cuda:0).
        self._executor: Executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="sprint-forward",
            initializer=torch.cuda.set_device if self.device.type == "cuda" else None,
            initargs=(self.device,) if self.device.type == "cuda" else ())

    def __repr__(self) -> str:
        graphs = f", cuda_graphs=True, decode_steps={self.decode_steps}" if self._graphs is not None else ""
        if self._slots.kernels is not None:
            graphs += ", fused_kernels=True"
        return (f"TransformersBackend({self.name!r}, device={str(self.device)!r}, max_batch={self.max_batch}, "
                f"exact={self.exact}{graphs})")

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
        fast_cuda = not self.exact and self.device.type == "cuda"
        kernels = _fused_kernels() if fast_cuda else None
        if fast_cuda and FUSE_PROJECTIONS:
            # Fewer, larger products: a small model's GPU step is launch-bound. The fused kernels read the slices
            # with their strides: no copies then.
            fuse_projections(self.model, contiguous=None if kernels is None else False)
        if fast_cuda:
            # The checks before installing launch kernels, on the current device (see the executor's initializer).
            with torch.cuda.device(self.device):
                if TOKEN_MAJOR_ROPE:
                    install_token_major_rope(self.model, kernels)   # several rows decode at one row's layout
                if kernels is not None:
                    self.fused_kernels = kernels.install(self.model)
                    self._slots.kernels = kernels
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
        """Tokens of `text` (no special tokens). A fast tokenizer's Rust tokenizer counts directly: a whole SPRINT
        trajectory (every execution at once) may be longer than the model's context, which the Python wrapper
        warns about although nothing that long is ever run."""
        if not text:
            return 0
        if self._rust_tokenizer is not None:
            return len(self._rust_tokenizer.encode(text, add_special_tokens=False).ids)
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode_prompt(self, prompt: str) -> list[int]:
        """Prompt ids. By default special tokens (BOS) are added unless the text already starts with the BOS text, as
        a chat template's output does (so BOS is never doubled)."""
        add = self.add_special_tokens
        if add is None:
            bos = getattr(self.tokenizer, "bos_token", None)
            add = not (bos and prompt.startswith(bos))
        return self._prompt_ids.encode(prompt, add)

    def prepare_prompt(self, prompt: str) -> None:
        """Tokenize a text that a coming request's prompt will hold (optional `Backend` capability; a SPRINT
        execution as it finishes): its pieces between added tokens are then cached (`sprint.backends.prompt_ids`)
        and that prompt is tokenized from them, not whole, at the moment it is sent."""
        self.encode_prompt(prompt)

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
            # Slots of a dead loop's requests are never released.
            self._slots = SlotCache(self.max_batch, self._slots.kernels, self._slots.layers)
            self._stepping, self._deferred = False, []
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
        """Start from the longest prefix of the prompt whose KV exists (running sequences, finished ones not yet
        kept, then the prefix cache): copied into a new slot, or a finished request's KV taken over in place when
        the prompt extends it whole."""
        import numpy as np

        best, best_store, from_cache = 0, None, False
        ids = req.prompt_ids
        prompt = np.asarray(ids, dtype=np.int64)   # once, not once per comparison

        def may_beat(tokens, n: int) -> bool:
            # Only a sequence that agrees with the prompt at position `best` can share more than `best` tokens: one
            # lookup rules out most (other problems' sequences part from this one's after the question).
            return n > best < len(ids) and int(tokens[best]) == ids[best]

        finished = None   # the finished request (not yet kept: `_deferred`) that shares the most, if any
        for other in itertools.chain(self._active, self._deferred):
            # A finished request's block may have run past its last kept token: only its kept tokens' KV counts.
            n = other.computed if other.finish is None else other.kept
            if other.store is not None and n and may_beat(other.tokens, n):
                m = _common_prefix(prompt, _tokens_upto(other, n))
                if m > best:
                    best, best_store, from_cache = m, other.store, False
                    finished = other if other.finish is not None else None
        # Newest first: a problem's own earlier sequences, which share the most with its prompt, are the newest.
        for toks, st in reversed(self._cache.entries.values()):
            if may_beat(toks, len(toks)):
                m = _common_prefix(prompt, toks)
                if m > best:
                    best, best_store, from_cache, finished = m, st, True, None
        reuse = min(best, len(req.prompt_ids) - 1)   # the last prompt token is always run: its logits are needed
        if finished is not None and best >= finished.kept and not (
                isinstance(finished.store, SlotSeq) and self._slots.free
                and min(self._slots.free) < finished.store.slot):
            # The prompt extends a finished request whole (a SPRINT planner's next call after a plan without
            # prompts): take its KV over where it is, no copy into the prefix cache and none out of it (unless a
            # lower slot is free: the new request should take that, see below). Nothing of it is lost: this
            # request's own KV, kept when it ends, covers it.
            self._deferred.remove(finished)
            req.store, finished.store = finished.store, None
            if isinstance(req.store, SlotSeq):
                self._slots.truncate(req.store, reuse)
            else:
                req.store.length = reuse
            req.cached = reuse
            self.stats.reused_prompt_tokens += reuse
            return
        if self._deferred:
            # Otherwise finished requests not yet kept are kept and freed first, then the prompt is matched again
            # (their KV is in the prefix cache then). Why not copy from their slots and keep them after the launch:
            # the new request would take a higher slot than theirs (a decode graph covers slots 0 .. highest in use;
            # then also a long prefill ran in a graph only from slot 0, which split steps have since lifted), and on
            # an H100 a stage's planner after its executors got its first text later so (8.4 against 8.0 ms, 6.8
            # against 5.9 in an earlier try; BENCHMARKS.md).
            self._drop_deferred()
            self._attach_prefix(req)
            return
        if not self.exact:
            req.store = self._slots.acquire()
        if reuse > 0 and best_store is not None:
            if self.exact:
                req.store = best_store.copy_prefix(reuse)
            else:
                self._slots.copy_prefix(best_store, req.store, reuse)
            req.cached = reuse
            self.stats.reused_prompt_tokens += reuse
            if from_cache:
                self._cache.touch(best_store)
        elif self.exact:
            req.store = KVStore()

    def _plan(self):
        """Rows of the next step: one per decoding sequence first, then prefill chunks (FIFO) up to step_tokens.

        Returns (rows, token ids, positions, [(request, row) whose logits pick its next token], request per segment).
        """
        segments, ids, positions, sample, owners = [], [], [], [], []
        decoding = [r for r in self._active if len(r.tokens) - r.computed == 1]
        prefilling = [r for r in self._active if len(r.tokens) - r.computed > 1]
        budget = self.step_tokens - len(decoding)
        if not decoding and not self.exact:
            # Nothing decodes, so a longer chunk stalls no one: fewer eager steps (a SPRINT planner reading a
            # stage's executions, ~1,400 tokens for the bundled Countdown model, was three).
            budget = max(budget, LONE_PREFILL_TOKENS)
        row = 0
        for req in decoding + prefilling:
            start_pos = req.computed
            n = len(req.tokens) - start_pos
            if n > 1:   # prefilling
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
            try:   # finished requests' KV still serves later prompts (the prefix cache outlives the loop)
                self._drop_deferred()
            except Exception:   # noqa: BLE001 - the callers must hear of the stop whatever happens here
                log.exception("keeping finished requests' KV failed")
            for req in list(self._active) + list(self._pending):
                req.finish = "error"
                req.queue.put_nowait(err)
            self._active, self._pending = [], deque()
            raise

    async def _schedule(self) -> None:
        assert self._wake is not None
        emit: list[_Request] = []   # requests whose newest token's text is still to be emitted
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
                if self._deferred and not self._pending:
                    # Requests just finished and nothing runs: their callers may answer at once with a request
                    # that extends one of them (a SPRINT planner's call after a plan without prompts). Wait a
                    # moment for it before keeping their KV: such a request takes that KV over where it is
                    # (`_attach_prefix`), with no copy out of the slot and none back in.
                    self._wake.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), IDLE_KEEP_S)
                    if self._pending:
                        continue
                self._drop_deferred()
                if self._slots.idle() and self._graphs is None:
                    # Nothing runs: give the fast-mode KV buffers back. With CUDA graphs they stay, bound to the
                    # graphs: each SPRINT stage starts after an idle moment and would re-capture otherwise.
                    self._slots.clear()
                self._wake.clear()
                await self._wake.wait()
                continue
            rows, ids, positions, sample, owners = self._plan()
            steps = self._block(rows, sample)
            loop = asyncio.get_running_loop()
            launched = loop.create_future()
            step = loop.run_in_executor(self._executor, self._step, rows, ids, positions, sample, steps,
                                        functools.partial(_settle_from_thread, loop, launched))
            step.add_done_callback(functools.partial(_settle_done, launched))   # one that failed before its launch
            self._stepping = True
            try:
                # The previous step's text (detokenizing, stop strings, the callers' queues and whatever they wake)
                # while this step computes, off the critical path: for a small model on a GPU a step is about a
                # millisecond and that host work is a good part of it. A request its stop string ends here still
                # has a row in this step: that token is dropped, and its KV is kept or freed once the step is done.
                # Only once the step is on the device: the worker thread needs the GIL to prepare and launch it, and
                # the text work holds the GIL, so started at once it ran *before* the launch (on an H200 a SPRINT
                # solve spent 0.85 ms between forward passes against the sequential model's 0.34 ms).
                await launched
                # Requests finished by the previous step: their KV goes to the prefix cache (device copies queued
                # behind this step) and their slots are freed, here rather than before the launch, where it held up
                # the device (about 1 ms per finished request on an H200 host: a SPRINT stage finishes seven).
                self._drop_deferred()
                self._emit(emit)
                emit = []
                tokens = await step
            except Exception as e:   # a failed forward pass fails the requests in it, not the backend
                log.exception("forward pass failed")
                err = BackendError(f"{self.name}: forward pass failed: {type(e).__name__}: {e}")
                for req in list(self._active):
                    req.queue.put_nowait(err)
                    req.finish = "error"
                    if isinstance(req.store, SlotSeq):
                        self._slots.release(req.store)
                self._active, emit = [], []
                continue
            finally:
                self._stepping = False
            emit = self._advance(rows, owners, sample, tokens)

    async def warmup(self, sequences: int | None = None) -> dict:
        """Get ready for runs of up to `sequences` concurrent sequences (default `max_batch`): with CUDA graphs, one
        short request builds the KV buffers, which are then sized for `max_positions` positions, and every decode
        graph such a run uses is captured (`DecodeGraphs.warmup`). Without graphs nothing is done. Returns what was
        done ({"graphs": captured, "seconds": spent}); call it before timing, with the backend idle."""
        if self._graphs is None:
            return {}
        start = time.perf_counter()
        await self.generate("0", GenerationParams(max_tokens=2))
        rows = min(self.max_batch, sequences or self.max_batch)
        positions = self.max_positions or 4096
        captured = await asyncio.get_running_loop().run_in_executor(
            self._executor, self._graphs.warmup, rows, positions, self.decode_steps)
        # The buffers' capacity: the context, or less where that would not fit (`DecodeGraphs.warmup`).
        capacity = self._slots.keys[0].shape[2] if self._slots.keys else 0
        return {"graphs": captured, "seconds": round(time.perf_counter() - start, 3), "sequences": rows,
                "positions": capacity}

    def _block(self, rows: StepRows, sample) -> int:
        """Decode steps the next forward pass may take at once (`decode_steps`): all of them when every row decodes
        greedily with room for them in the context, no observer wants each step's logits and no request waits to
        join; else 1.
        With `SPLIT_BLOCKS`, prefill rows in the step do not stop a block: the decoding rows take it, each prefill
        one step (where the graphs split the step; `decode_graphs.partition`)."""
        k = self.decode_steps
        if k <= 1 or self._graphs is None or self._graphs.disabled or self.on_logits is not None:
            return 1
        if self._pending and not (FULL_BATCH_BLOCKS and len(self._active) >= self.max_batch):
            return 1   # a request waits: one step, so that a slot a request frees goes to it at once
        decoding = [end - start == 1 for start, end, _, _ in rows.segments]
        if not all(decoding) and not (SPLIT_BLOCKS and any(decoding)):
            return 1
        for req, _ in sample:
            # A request's token limit inside the block does not stop it: `_advance` ends the request there and drops
            # the rest (as at a stop string), where one request near its limit made every pass of a full batch of
            # short requests one step. The context's end does: the block would write past it.
            if req.params.temperature > 0 or (self.max_positions and len(req.tokens) + k > self.max_positions):
                return 1
        return k

    def _step(self, rows: StepRows, ids: list[int], positions: list[int], sample, steps: int = 1,
              launched=None) -> list[list[int]]:
        """One forward pass (worker thread): compute the rows, then pick each sampling row's next token (up to `steps`
        tokens for a decoding row, when a multi-step graph takes it); through a CUDA graph when one takes the step
        (`sprint.backends.decode_graphs`), else eagerly (`_eager_step`). Returns each sampling row's picks.
        `launched()` (if given) is called once: when a graph replay is queued on the device, or as an eager step
        begins (the scheduler's host work waits for it: see `_schedule`)."""
        picks = None
        if self._graphs is not None:
            picks = self._graphs.step(rows, ids, positions, sample, steps, launched)
        if picks is None:
            if launched is not None:
                launched()
            picks = [[p] for p in self._eager_step(rows, ids, positions, sample)]
        else:
            self.stats.graph_steps += 1
        # Steps after a row's first wrote their input tokens' keys too (a decoding row in a block: as many steps as
        # it has picks; a prefill chunk one); `_drop_store` trims what a finished request did not keep.
        extra = {row: len(p) - 1 for (_, row), p in zip(sample, picks)}
        for start, end, store, pos0 in rows.segments:
            store.length = pos0 + end - start + extra.get(end - 1, 0)
        return picks

    def _eager_step(self, rows: StepRows, ids: list[int], positions: list[int], sample) -> list[int]:
        """The forward pass from Python. Host and device meet once each way (see module doc): every index goes over
        in one copy (`_upload`), and the picked tokens come back with one `.tolist()`, the step's only
        synchronisation unless rows sample."""
        import torch

        n, keep_rows = len(ids), [r for _, r in sample]
        plan = rows if self.exact else self._slot_rows(rows, positions)
        extra = [] if self.exact else plan.index_lists()
        dev_ids, dev_pos, dev_keep, *index = self._upload(ids, positions, keep_rows, *extra)
        if not self.exact:
            write_slot, single_rows, single_slots, lengths = index
            plan.bind(write_slot, dev_pos, single_rows, single_slots, lengths)
        with torch.no_grad(), self._attention_kernels(torch):
            out = self.model(input_ids=dev_ids.view(1, n), position_ids=dev_pos.view(1, n), use_cache=False,
                             sprint_rows=plan, logits_to_keep=dev_keep if sample else 1)
            logits = out.logits[0]   # [len(sample), vocab]: row i is sample[i]'s
            greedy = [req.params.temperature <= 0 for req, _ in sample]
            # Per-row results do not depend on the other rows: take all rows, no index tensor built on the host.
            argmax = logits.argmax(-1).tolist() if any(greedy) else []
            # One device-to-host copy for all sampling rows, not one per request.
            host = logits.float().cpu() if not all(greedy) else None
            return self._picks(sample, argmax, lambda i: logits[i], host)

    def _upload(self, *parts: list[int]) -> list:
        """The step's integer lists in ONE host-to-device copy (asynchronous, from pinned memory on CUDA); returns a
        device view per list. Sizes are the step's rows and slots, never its context."""
        import torch

        flat: list[int] = []
        for part in parts:
            flat.extend(part)
        if self.device.type == "cuda":
            dev = torch.tensor(flat, dtype=torch.long, pin_memory=True).to(self.device, non_blocking=True)
        else:
            dev = torch.tensor(flat, dtype=torch.long, device=self.device)
        views, i = [], 0
        for part in parts:
            views.append(dev[i:i + len(part)])
            i += len(part)
        return views

    def _attention_kernels(self, torch):
        """Context of a forward pass: on CUDA, scaled_dot_product_attention without cuDNN (see `AVOID_CUDNN_SDPA`)."""
        if self.device.type != "cuda" or not AVOID_CUDNN_SDPA:
            return contextlib.nullcontext()
        return _cudnn_sdpa_off(torch)

    def _slot_rows(self, rows: StepRows, positions: list[int]) -> SlotRows:
        """The fast-mode plan of a step, with host index lists (`_step` moves them to the device with the rest)."""
        write_slot, single_rows, single_slots, chunks = [], [], [], []
        for start, end, seq, pos0 in rows.segments:
            write_slot.extend([seq.slot] * (end - start))
            if end - start == 1:
                single_rows.append(start)
                single_slots.append(seq.slot)
            else:
                chunks.append((start, end, seq.slot, pos0))
        span = max(single_slots) + 1 if single_slots else 0
        lengths = [1] * span
        for (start, end, seq, pos0) in rows.segments:
            if end - start == 1:
                lengths[seq.slot] = pos0 + 1
        b = len(single_rows)
        in_order = list(range(b))
        groups = None
        if self.device.type == "cpu" and span > SLOT_GROUP:
            # Runs of SLOT_GROUP slots, each attending up to its own longest sequence (`_batched_decode_attention`),
            # when that saves a tenth of the key positions or more: the slots of one SPRINT problem (the planner
            # and its executors share a context) sit next to each other, other problems' may be much longer.
            runs = [lengths[a:a + SLOT_GROUP] for a in range(0, span, SLOT_GROUP)]
            groups = [(a, a + len(r), max(r), min(r) == max(r)) for a, r in zip(range(0, span, SLOT_GROUP), runs)]
            if sum((b - a) * n for a, b, n, _ in groups) > 0.9 * span * max(lengths):
                groups = None
        return SlotRows(
            cache=self._slots, capacity=max(pos0 + end - start for start, end, _, pos0 in rows.segments),
            groups=groups,
            slots=max(seq.slot for _, _, seq, _ in rows.segments) + 1,
            write_slot=write_slot, write_pos=positions, single_rows=single_rows, single_slots=single_slots,
            lengths=lengths, span=span, max_len=max(lengths) if lengths else 0, chunks=chunks,
            full=span == b and bool(lengths) and min(lengths) == max(lengths),
            aligned=not chunks and span == b > 0 and single_rows == in_order and single_slots == in_order)

    def _picks(self, sample, argmax, logits_of, host) -> list[int]:
        """Each sampling row's next token: `argmax[i]` for a greedy request, else a draw from `host[i]` (its logits on
        the host); the `on_logits` observer sees `logits_of(i)`. Row i is sample[i]'s (the eager step and the
        CUDA-graph step share this rule)."""
        picks: list[int] = []
        for i, (req, _) in enumerate(sample):
            if self.on_logits is not None:
                self.on_logits(list(req.tokens), logits_of(i))
            picks.append(argmax[i] if req.params.temperature <= 0 else self._sample(host[i], req))
        return picks

    @staticmethod
    def _sample(logits, req: _Request) -> int:
        import torch

        p = req.params
        probs = torch.softmax(logits / p.temperature, dim=-1)   # float32 on the host (see _step)
        if p.top_p < 1.0:
            sorted_p, order = probs.sort(descending=True)
            keep = sorted_p.cumsum(0) - sorted_p < p.top_p   # always keeps the most likely token
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
        return int(torch.multinomial(probs, 1, generator=req.generator))

    def _advance(self, rows: StepRows, owners: list[_Request], sample, tokens: list[int]) -> list[_Request]:
        """After a step (event loop): count, append sampled tokens, finish sequences at EOS or their length limit.
        Returns the requests whose new token's text is still to be emitted (`_emit`, while the next step runs)."""
        st = self.stats
        st.forward_passes += 1
        st.rows_computed += sum(e - s for s, e, _, _ in rows.segments)
        st.max_sequences_in_step = max(st.max_sequences_in_step, len(rows.segments))
        for (start, end, _, pos0), req in zip(rows.segments, owners):
            st.prefilled_tokens += max(0, min(pos0 + end - start, len(req.prompt_ids)) - pos0)
        now = time.perf_counter()
        emit = []
        for (req, _), picks in zip(sample, tokens):
            if req.cancelled or req.finish is not None:   # finished while this step ran (its stop string)
                continue
            if req.first_token is None:
                req.first_token = now
            finish = None
            for tok in picks:
                req.generated += 1
                st.generated_tokens += 1
                if tok in self.eos_ids:
                    finish = "stop"
                    break
                req.tokens.append(tok)
                if req.generated >= req.params.max_tokens or (self.max_positions and
                                                             len(req.tokens) >= self.max_positions):
                    finish = "length"
                    break
            # A block that went on past an EOS or the limit wrote keys after the kept tokens: `_finish` trims them
            # (`_drop_store`).
            if finish is None and not self._stop_ids(req).isdisjoint(picks):
                # A token that completes a stop string by itself (a SPRINT tag closing a plan or an execution): the
                # text is read now, so the request ends before the next launch instead of after it. Why: it then
                # takes no row of that step, and the caller (the orchestrator ending a stage) hears of it one
                # forward pass earlier, at every stage's end. `_emit` reads and cuts the text as it always does.
                self._emit([req])
                if req.finish is None:   # not possible for an exact stop token; the usual path then
                    emit.append(req)
            elif finish == "stop":
                self._emit([req])   # the tokens before the EOS
                self._finish(req, "stop")
            elif finish == "length":
                self._emit([req])   # a stop string in these last tokens still wins
                self._finish(req, "length")
            else:
                emit.append(req)
        return emit

    def _stop_ids(self, req: _Request) -> frozenset[int]:
        """Added tokens whose text holds one of the request's stop strings whole (so reading that token always ends
        the request): a SPRINT tag such as an execution's closing tag, which the orchestrator's stop strings are. Per
        set of stop strings, computed once."""
        stop = tuple(req.params.stop or ())
        ids = self._stop_token_cache.get(stop)
        if ids is None:
            added = getattr(self.tokenizer, "get_added_vocab", dict)() if stop else {}
            ids = self._stop_token_cache[stop] = frozenset(
                i for text, i in added.items() if any(s and s in text for s in stop))
        return ids

    def _emit(self, reqs: list[_Request]) -> None:
        """Each request's new text to its queue; a request whose stop string appears finishes. Several new tokens
        (a multi-step block) are read one at a time, so a stop string ends the request at the token that completes
        it, as a step at a time would: the tokens after it are dropped and not counted."""
        for req in reqs:
            if req.finish is not None:
                continue
            text = ""
            if len(req.tokens) - req.read_offset > 1:
                # A block's tokens at once (two decodes, not two per token: a SPRINT stage decodes up to eight
                # streams, each a few tokens per pass) when no stop string can end in them.
                text = req.scanner.feed(self._block_text(req))
            for end in range(req.read_offset + 1, len(req.tokens) + 1):   # usually one token; a block's several
                text += req.scanner.feed(self._detokenize(req, upto=end))
                if req.scanner.hit is not None:
                    req.generated -= len(req.tokens) - end
                    del req.tokens[end:]
                    break
            if text:
                req.queue.put_nowait(text)
            if req.scanner.hit is not None:
                self._finish(req, "stop")

    def _block_text(self, req: _Request) -> str:
        """The new text of all the request's unread tokens, read (as `_detokenize` reads them), unless it may
        complete one of the request's stop strings or ends in an incomplete character: then "" and nothing read,
        and `_emit` reads the tokens one at a time, to end the request at the token that completes the stop
        string."""
        delta = self._new_text(req, len(req.tokens))
        if not delta:
            return ""
        seen = req.scanner.text[req.scanner.emitted:] + delta   # a held tail may start a stop string
        if any(s in seen for s in req.scanner.stop):
            return ""
        req.prefix_offset, req.read_offset = req.read_offset, len(req.tokens)
        return delta

    def _decode_ids(self, ids: list[int]) -> str:
        """Token ids to text, exactly as generated: no clean-up of spaces (it may rewrite earlier text). A fast
        tokenizer's decode is its Rust tokenizer's, called directly: without the Python wrapper's argument conversion
        it costs about a third, and it runs twice per token per stream."""
        if self._rust_tokenizer is not None:
            return self._rust_tokenizer.decode(ids, skip_special_tokens=False)
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _detokenize(self, req: _Request, final: bool = False, upto: int | None = None) -> str:
        """New text since the last call (of the tokens before `upto`, default all); holds back an incomplete UTF-8
        character (TGI's incremental decoding) unless `final`. Starting a few prompt tokens back keeps tokenizers
        that drop a leading space honest."""
        end = len(req.tokens) if upto is None else upto
        delta = self._new_text(req, end, final)
        if delta:
            req.prefix_offset, req.read_offset = req.read_offset, end
        return delta

    def _new_text(self, req: _Request, end: int, final: bool = False) -> str:
        """The text the request's tokens read_offset .. end-1 add (nothing read yet): "" when they add none or
        end in an incomplete UTF-8 character (unless `final`)."""
        prefix = self._decode_ids(req.tokens[req.prefix_offset:req.read_offset])
        full = self._decode_ids(req.tokens[req.prefix_offset:end])
        if len(full) > len(prefix) and (final or not full.endswith("\ufffd")):
            return full[len(prefix):]
        return ""

    def _fills_capacity(self, req: _Request) -> bool:
        """Whether the request's KV reaches the slot buffers' last position, which a CUDA-graph step writes for every
        slot that has no sequence in it (`sprint.backends.decode_graphs`): such a request's KV is kept at once,
        before a next step could overwrite it."""
        store = req.store
        return isinstance(store, SlotSeq) and bool(self._slots.keys) and (
            store.length >= next(iter(self._slots.keys.values())).shape[2])

    def _drop_deferred(self) -> None:
        deferred, self._deferred = self._deferred, []
        for req in deferred:
            self._drop_store(req)

    def _drop_store(self, req: _Request) -> None:
        """A finished request's KV: into the prefix cache (it serves later prompts), its slot freed. A request
        whose caller said no later prompt extends it (`GenerationParams.keep_kv` False) is only freed: exporting
        its slot is a copy of every layer's keys and values."""
        keep = req.params.keep_kv and self._cache.max_tokens > 0
        if req.store is not None:
            req.store.length = req.kept   # keys past the kept tokens are not the prefix's
        if isinstance(req.store, SlotSeq):
            seq, req.store = req.store, None
            if seq.length and keep:
                self._cache.add(req.tokens, self._slots.export(seq))
            self._slots.release(seq)
        elif req.store is not None and keep:
            self._cache.add(req.tokens, req.store)

    def _finish(self, req: _Request, reason: str) -> None:
        if req.finish is not None:
            return
        req.finish = reason
        if req in self._active:
            self._active.remove(req)
        if self._task is not None and not self._task.done() and not self._fills_capacity(req):
            # The scheduler keeps or frees the KV once the next step is on the device (or when it idles): between
            # steps the work would hold up the next launch.
            self._deferred.append(req)
        else:
            self._drop_store(req)
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
