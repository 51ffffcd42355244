"""CUDA graphs for the in-process backend's decode steps and short prefills (fast mode): one graph launch per step
instead of hundreds of kernel launches from Python.

Why: a small model's decode step on a GPU is bound by the host, not the device. The bundled Countdown models (8
layers, hidden 256) take 7-9 ms per step on an H200 whatever the batch (BENCHMARKS.md), nearly all of it Python and
kernel launches; the device work is a fraction of a millisecond. A captured graph replays the whole forward pass
(embedding, every layer's projections, rotary, KV write, attention, the LM head and the greedy argmax) as one launch.

What is captured: the fast mode's *aligned* step at a fixed shape. A step qualifies when no sequence in it brings
more than `QUERY_BUCKETS[-1]` new tokens: every decoding sequence (one token), and short prefills, such as a SPRINT
executor's prompt after its shared prefix is reused (7 tokens for the bundled Countdown model: each executor's start
would otherwise be an eager step, 6 per stage). Rows are laid out by slot, `Q` rows per slot: row s * Q + j is slot
s's j-th new token, for slots 0 .. B-1, where B is the smallest bucket (1, 2, 4, ... up to `max_batch`) that holds
the highest running slot and Q the smallest of `QUERY_BUCKETS` that holds the longest segment. A slot with fewer than
Q new tokens repeats its last one (same token, same position: the same key and value written to the same place, and
the same logits); so row s * Q + Q - 1 always carries slot s's next-token logits, and only those B rows go through the
LM head. Slots without a sequence get dummy rows: token 0, written at the buffers' last position (capacity - 1),
attending to one key. That write is harmless: a free slot's keys are never read before a new sequence writes them,
and a running sequence cannot own position capacity - 1 yet (it would need a larger capacity this step, which means
new buffers and a new graph); the real rows write their own positions after. (A finished sequence whose KV the
backend keeps after the next launch has no row either: one that reaches position capacity - 1 is kept at once,
`TransformersBackend._fills_capacity`.) Attention runs over the first K keys
of each slot with a key-length mask per row, K the smallest of the key buckets (256, 512, ... up to the capacity)
that holds the step's longest row, so the shapes depend only on (B, Q, capacity, K). Why K and not the capacity: the
buffers keep the capacity of the longest sequence so far (8,192 positions once a SPRINT context passed 4,096), and a
decode step attending over all of it cost about 2-3 ms on an H200 where the graph's own step at a short capacity is
0.8 ms (BENCHMARKS.md, the seventh pair's latency). All graphs of a generation share one memory pool: replays never
overlap and every graph's inputs and outputs live outside it, so the pool needs the largest graph's activations, not
the sum of all of them.

Split steps: a step that no single graph takes (a prefill past the query buckets, such as a SPRINT planner reading a
stage's executions, or more slots x rows than `MAX_GRAPH_ROWS`, such as an executor's prompt joining 100-odd decoding
rows) runs as several replays in one pass (`partition`): the decoding rows in the decode graph of their
bucket, then each prefill in a graph of one slot (B = 1, Q one of the query buckets or of `LONG_QUERY_BUCKETS`; the
long ones for small models only, `LONG_PREFILL_MAX_PARAMS`). Such a one-slot graph serves any slot: row 4 of its
input names it, its rows write their KV there and its attention reads that slot's keys (copied out up to the key
bucket), so a prefill does not need slot 0. The decode graph gives the prefilling slot a dummy row (see above), and
the parts touch disjoint slots, so their order does not matter. Why: with 64 Countdown problems in flight, 71% of a
SPRINT run's time was such steps run eagerly, about 20 ms each on an H200 against 4 ms for a graph pass of the same
batch; with split steps the run took 0.42x the time (BENCHMARKS.md, 2026-11-28). Only a run's first step (it builds
the buffers) and prefills past the longest bucket still run eagerly.

A graph is keyed by (B, Q, capacity, K, S) (S: decode steps per replay, below) and bound to the slot cache's
buffers of one *generation*: `SlotCache` bumps its generation whenever it allocates or drops buffers, and the graphs
of an older generation are dropped (they point at the old buffers, which they keep alive until then). With graphs
on, the backend keeps its buffers when it idles (else every SPRINT stage, which begins after the planner's request
ends, would re-allocate and re-capture).

Several decode steps per replay (S, the backend's `decode_steps`): a decode-only step whose requests are all greedy
may run S steps in one graph, each row fed its own argmax one position on (dummy rows stay put), so the host meets the
device once per S tokens. Why: with these graphs a SPRINT step still paid the host's per-step work (the scheduler, the
thread hand-off, up to seven streams' text and the orchestrator they wake), which is why a SPRINT token cost 1.5x a
sequential one on an H200 once attention stopped growing with the context. The cost: a request that ends inside the
block (EOS, its stop string, its token limit) has its later tokens computed and dropped (`TransformersBackend`).

Host traffic per step: one copy of 6 x B x Q integers in (ids, positions, key lengths, real rows, prefix sources
and their lengths: `SlotCache.shares`), one `.tolist()` of S x B picked tokens out; sampling rows (temperature > 0)
and the `on_logits` observer read their rows of the graph's logits.

`capture=False` runs the same padded step eagerly (no graph): the layout and masking logic is then testable on a
CPU, where CUDA graphs do not exist. A model whose forward pass cannot be captured (one that reads device values on
the host, as dynamic RoPE scaling does) logs a warning at the first capture and decodes eagerly from then on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

#: New tokens per slot a captured step takes (1: decoding only). 8 holds a Countdown executor's prompt (7 tokens),
#: 64 a Countdown question (33 tokens: the first step of every solve, SPRINT or sequential).
QUERY_BUCKETS = (1, 8, 32, 64)
#: The smallest key bucket: a step attends to the first K keys of each slot, K = this doubled until it holds the
#: step's longest row (at most the buffers' capacity).
KEY_BUCKET_MIN = 256
#: Key buckets per doubling (`key_buckets`): 1 gives 256, 512, 1,024, ...; 2 also 384, 768, 1,536, 3,072. Why a
#: switch: a step attends over its whole bucket, and a SPRINT stage's executors decode at the stage's context (a third
#: stage of the bundled Countdown model at about 2,900 keys, in the 4,096 bucket: 8 rows cost 412 us per step there
#: against 348 at 2,048 on an H200, BENCHMARKS.md), where the sequential model's context is shorter. Finer buckets
#: capture twice the graphs. Timed on an H200 (`flag_ab.py --variant kb2=decode_graphs.KEY_BUCKET_SPLITS=2`, one
#: problem at a time): 0.989x [0.967, 1.004] for SPRINT, 0.992x for the sequential model, for 205 graphs against
#: 115 and a warm-up of 7 s against 4 (BENCHMARKS.md, sixth session): left at 1.
KEY_BUCKET_SPLITS = 1
#: Rows (B x Q) a multi-row graph may have: its activations and masks grow with them (a bucket past this runs eagerly).
MAX_GRAPH_ROWS = 256
#: New tokens a lone sequence (B = 1) may prefill in one graph: a SPRINT planner reading a stage's executions
#: (1,100-1,300 tokens for the bundled Countdown model) took 24-35 ms per stage as an eager step on an H200, several
#: eager forward passes' worth. Empty: such prefills run eagerly.
LONG_QUERY_BUCKETS = (128, 256, 512, 1024, 2048, 4096)
#: Warm-up sizes the KV buffers for the model's whole context only while they take at most this share of the GPU's
#: free memory (`DecodeGraphs.warmup`).
WARMUP_MEMORY_SHARE = 0.25
#: Long-prefill graphs only for models up to this many parameters: a larger model's long prefill is bound by its
#: compute, not by launches, and its graph would hold that prefill's activations (gigabytes) for the whole run.
LONG_PREFILL_MAX_PARAMS = 1_000_000_000


#: Steps that no single graph takes run as several replays (`partition`) instead of eagerly. Off: as before
#: them (eager, but a lone long prefill in slot 0). A switch for A/B runs (`flag_ab.py --variant
#: nosplit=decode_graphs.SPLIT_STEPS=0`).
SPLIT_STEPS = True

#: Row counts captured besides the powers of two (below `max_batch`): e.g. (6,) so that five or six running slots
#: replay a 6-row graph instead of an 8-row one. An experiment switch (more graphs to capture); empty by default.
EXTRA_BUCKETS: tuple[int, ...] = ()


def buckets(max_batch: int) -> list[int]:
    """Row counts a graph is captured for: powers of two below `max_batch`, any `EXTRA_BUCKETS` below it, and
    `max_batch` itself."""
    out, b = [], 1
    while b < max_batch:
        out.append(b)
        b *= 2
    return sorted(set(out) | {x for x in EXTRA_BUCKETS if 0 < x < max_batch}) + [max_batch]


def key_buckets(capacity: int) -> list[int]:
    """Key lengths a step may attend over with buffers of `capacity` positions: KEY_BUCKET_MIN doubled (with
    `KEY_BUCKET_SPLITS` - 1 evenly spaced sizes between doublings), and the capacity itself."""
    out, k = [], KEY_BUCKET_MIN
    while k < capacity:
        out += [x for x in (k + k * i // KEY_BUCKET_SPLITS for i in range(KEY_BUCKET_SPLITS)) if x < capacity]
        k *= 2
    return out + [capacity]


def graph_fits(b: int, q: int) -> bool:
    """Whether B slots with Q rows each may be captured: decoding always, multi-row steps up to MAX_GRAPH_ROWS rows, a
    lone sequence's long prefill in any of LONG_QUERY_BUCKETS."""
    return q == 1 or b * q <= MAX_GRAPH_ROWS or (b == 1 and q in LONG_QUERY_BUCKETS)


def _mapped(b: int, q: int) -> bool:
    """Whether a graph of B slots x Q rows serves any one slot, named by its input's row 4, rather than slot 0: a
    prefill of one sequence (B = 1, Q > 1) wherever its slot is (`partition`). One-row decode graphs of
    B = 1 stay on slot 0, where a lone sequence decodes, with no slot lookup in their every step."""
    return b == 1 and q > 1


def fit(sizes, n: int) -> int | None:
    """The smallest of `sizes` (ascending) that holds `n`, or None."""
    return next((size for size in sizes if size >= n), None)


def partition(segments, steps: int, buckets, multi_row: bool = True, long_rows: bool = True):
    """How graphs take a step (its segments: (first row, end row, sequence, first position)): a list of parts
    (B, Q, segments, S), one graph replay each, or None when the step runs eagerly. `steps`: the decode steps the
    decoding rows may take (`TransformersBackend._block`); a part with prefill rows takes one. One graph when one
    holds every row; else a split step (module doc): the decoding rows' graph, then one graph per prefill.
    `multi_row` / `long_rows`: whether graphs of short / long prefills may be used (`DecodeGraphs`)."""
    longest = max(e - s for s, e, _, _ in segments)
    span = max(seq.slot for _, _, seq, _ in segments) + 1
    q = fit(QUERY_BUCKETS if multi_row else QUERY_BUCKETS[:1], longest)
    b = fit(buckets, span)
    if q is not None and b is not None and graph_fits(b, q):
        return [(b, q, segments, steps if q == 1 else 1)]   # one graph takes the whole step
    if not SPLIT_STEPS:   # as before split steps: a lone long prefill in slot 0 only
        q = fit(LONG_QUERY_BUCKETS, longest) if len(segments) == 1 else None
        return [(1, q, segments, 1)] if span == 1 and long_rows and q is not None else None
    decode = [seg for seg in segments if seg[1] - seg[0] == 1]
    parts = []
    if decode:
        b = fit(buckets, max(seq.slot for _, _, seq, _ in decode) + 1)
        if b is None:
            return None
        parts.append((b, 1, decode, steps))
    sizes = (QUERY_BUCKETS[1:] if multi_row else ()) + (LONG_QUERY_BUCKETS if long_rows else ())
    for seg in segments:
        m = seg[1] - seg[0]
        if m > 1:
            q = next((x for x in sizes if x >= m and graph_fits(1, x)), None)   # the smallest graph that holds it
            if q is None:
                return None
            parts.append((1, q, [seg], 1))
    return parts


@dataclass
class _Graph:
    """One captured step: its static input [6, B * Q] (ids, positions, key lengths, 1 for a real row and 0 for a
    dummy, the slot whose buffer holds the row's slot's first keys and how many: `SlotCache.shares`), outputs (each
    slot's next-token logits [B, vocab] and argmax [S, B], one row per decode step of a multi-step graph) and the
    buffers it uses."""

    rows: int       # B: slots
    capacity: int
    inputs: Any
    logits: Any
    argmax: Any
    queries: int = 1   # Q: rows per slot
    keys: int = 0      # K: keys each slot attends over (0: the capacity)
    keep: Any = None   # Q > 1: the rows whose logits are computed (each slot's last)
    steps: int = 1     # S: greedy decode steps per replay (Q = 1), each fed the previous one's argmax
    write_slot: Any = None   # each row's slot, built before the capture (`repeat_interleave` may read sizes back
                             # from the device, which a capture does not allow)
    graph: Any = None
    buffers: list = field(default_factory=list)   # the generation's KV buffers, kept alive while the graph lives


class DecodeGraphs:
    """Captures and replays the decode steps (and short prefills) of a fast-mode `TransformersBackend` (module doc)."""

    def __init__(self, backend, *, capture: bool = True) -> None:
        self.backend = backend
        self.capture = capture
        self.buckets = buckets(backend.max_batch)
        self.graphs: dict[tuple[int, int, int, int, int], _Graph] = {}   # by (B, Q, capacity, K, S)
        self.generation = -1
        self.disabled = False   # set when a capture fails: the model then decodes eagerly
        self.multi_row = True   # cleared when a multi-row capture fails: short prefills then run eagerly
        # Long prefills of a lone sequence in graphs: small models only; cleared when such a capture fails.
        self.long_rows = sum(p.numel() for p in backend.model.parameters()) <= LONG_PREFILL_MAX_PARAMS
        self._pool = None       # one memory pool for all graphs of a generation (they never run at once)
        self.captures = 0   # graphs captured (or eager stand-ins built)

    def step(self, rows, ids: list[int], positions: list[int], sample, steps: int = 1,
             launched=None) -> list[list[int]] | None:
        """Run a step through a graph (or a split step through several: module doc) and return each sampling row's
        picks (one per step), or None when the step does not qualify (a prefill past the longest bucket, or the
        layers' buffers not built yet): the caller then runs it eagerly. `steps` > 1: the decoding rows may take that
        many greedy decode steps in one replay (the caller checks that every request may: greedy, no observer, room
        in the context); rows of a prefill, or every row of a graph that holds a prefill, take one (`partition`).
        `launched()`, if given, is called once every replay is queued on the device, before this thread waits for
        them. `last_kind` says afterwards what ran (`_kind`; None: nothing, the step is the caller's)."""
        import torch

        self.last_kind = None
        segments = rows.segments
        if self.disabled or not segments:
            return None
        cache = self.backend._slots
        n_layers = getattr(self.backend.model.config, "num_hidden_layers", None)
        if not n_layers or len(cache.keys) != n_layers:
            # The first step of a run is a prefill, which builds every layer's buffers. (A config without
            # num_hidden_layers cannot say when that is done: such a model decodes eagerly.)
            return None
        parts = partition(segments, steps, self.buckets, self.multi_row, self.long_rows)
        if parts is None:
            return None
        needed = max(positions) + max(s for _, _, _, s in parts)   # a block's last step writes position max + S - 1
        slots = max(b for b, _, _, _ in parts)
        for layer in list(cache.keys):
            cache.ensure(layer, cache.keys[layer], cache.values[layer], needed, slots)
        self._follow_generation()
        capacity = cache.keys[0].shape[2]
        chosen = []
        for b, q, segs, s in parts:
            # Every row attends to at most its position + 1 keys: the part's own longest row sets its key bucket.
            k = fit(key_buckets(capacity), max(pos0 + e - start for start, e, _, pos0 in segs) + s - 1)
            g = self.graphs.get((b, q, capacity, k, s))
            if g is None:
                g = self._capture(b, q, capacity, k, s)
                if g is None:
                    return None
            chosen.append(g)
        # Each sampling row (its segment's last) -> (part, its slot's index in that part's outputs).
        where = {}
        for i, (b, q, segs, _) in enumerate(parts):
            for _, end, seq, _ in segs:
                where[end - 1] = (i, 0 if _mapped(b, q) else seq.slot)
        # Logits are read only for sampling rows and by the `on_logits` observer.
        read_logits = self.backend.on_logits is not None or any(req.params.temperature > 0 for req, _ in sample)
        argmax, logits = [], []
        with torch.no_grad():
            for (b, q, segs, _), g in zip(parts, chosen):
                g.inputs.copy_(self._inputs(b, q, capacity, segs, ids, cache), non_blocking=True)
                if g.graph is not None:
                    g.graph.replay()
                else:
                    self._forward(g)
                # Several parts: the same graph may serve two of them, so each part's outputs are copied (queued
                # behind its replay) before the next replay overwrites them.
                argmax.append(g.argmax if len(parts) == 1 else g.argmax.clone())
                logits.append(g.logits if len(parts) == 1 or not read_logits else g.logits.clone())
            # Part i's picks [S_i, B_i] flattened one after another: one read for all of them.
            picked = argmax[0].view(-1) if len(argmax) == 1 else torch.cat([a.view(-1) for a in argmax])
        if launched is not None:
            launched()
        self.last_kind = self._kind(parts)
        flat = picked.tolist()
        offset = [0]
        for g in chosen:
            offset.append(offset[-1] + g.steps * g.rows)
        order = [where[row] for _, row in sample]   # sample[i]'s (part, index)
        if any(s > 1 for _, _, _, s in parts):   # a block: each row its part's S picks, step by step
            return [[flat[offset[i] + k * chosen[i].rows + j] for k in range(chosen[i].steps)] for i, j in order]
        columns = [offset[i] + j for i, j in order]
        sampled = [i for i, (req, _) in enumerate(sample) if req.params.temperature > 0]
        host: dict = {}
        if sampled:   # one device-to-host copy for the sampling rows' logits
            rows_of = torch.cat(logits) if len(logits) > 1 else logits[0]
            index = torch.tensor([columns[i] for i in sampled], device=rows_of.device)
            host = dict(zip(sampled, rows_of.index_select(0, index).float().cpu()))
        picks = self.backend._picks(sample, [flat[c] for c in columns],
                                    lambda i: logits[order[i][0]][order[i][1]], host)
        return [[p] for p in picks]

    @staticmethod
    def _kind(parts) -> str:
        """What a step ran as (`last_kind`, for traces): `decode xS`, `join Q` (short prefills among decoding rows),
        `long prefill` (one sequence's prefill past the query buckets) or `split N` (N graph replays; `split N xS`:
        the decoding rows took S steps)."""
        if len(parts) > 1:
            steps = parts[0][3]
            return f"split {len(parts)}" + (f" x{steps}" if steps > 1 else "")
        _, q, _, s = parts[0]
        if q == 1:
            return f"decode x{s}"
        return f"join {q}" if q <= QUERY_BUCKETS[-1] else "long prefill"

    def _capture(self, b: int, q: int, capacity: int, k: int, s: int):
        """Capture the graph (B, Q, capacity, K, S) and keep it; None when that kind of step has to run eagerly
        (a failed capture turns it off from then on)."""
        try:
            g = self.graphs[(b, q, capacity, k, s)] = self._build(b, capacity, q, k, s)
            return g
        except Exception as e:   # noqa: BLE001 - any capture failure: eager from now on (that kind of step)
            if q > QUERY_BUCKETS[-1]:   # the others may still work: only long prefills go back to eager steps
                log.warning("CUDA graph capture of a long prefill failed (%s: %s); long prefills run without "
                            "CUDA graphs", type(e).__name__, e)
                self.long_rows = False
                return None
            if q > 1:   # the decode graphs may still work: only the short prefills go back to eager steps
                log.warning("CUDA graph capture of a multi-row step failed (%s: %s); short prefills run "
                            "without CUDA graphs", type(e).__name__, e)
                self.multi_row = False
                return None
            log.warning("CUDA graph capture failed (%s: %s); decoding without CUDA graphs", type(e).__name__, e)
            self.disabled = True
            self.graphs.clear()
            return None

    def warmup(self, rows: int, positions: int, steps: int) -> int:
        """Size the slot buffers for `rows` sequences of `positions` positions and capture every graph a run of at
        most that many sequences uses: each row bucket up to `rows`, each key bucket, decoding (one step and `steps`
        steps) and each short-prefill bucket. Returns the graphs captured. Why: a graph is captured the first time
        its shape comes up, tens of milliseconds each; mid-run that lands on whichever request meets the shape first
        (in a one-at-a-time latency run a SPRINT solve meets far more shapes than a sequential one), and buffers
        that grow later drop every graph. Call it between runs (the buffers must not be in use)."""
        cache = self.backend._slots
        if self.disabled or not cache.keys:
            return 0
        top = fit(self.buckets, rows) or self.buckets[-1]
        positions = self._affordable(positions, max(top, cache.keys[0].shape[0]))
        for layer in list(cache.keys):
            cache.ensure(layer, cache.keys[layer], cache.values[layer], positions, top)
        self._follow_generation()
        capacity = cache.keys[0].shape[2]
        before = self.captures
        shapes = [(1, 1), (1, steps)] + [(q, 1) for q in QUERY_BUCKETS[1:]]
        long = [(q, 1) for q in LONG_QUERY_BUCKETS if q > QUERY_BUCKETS[-1]] if self.long_rows else []
        # Largest first: they set the shared pool's size, the smaller ones fit in it.
        for b in sorted((x for x in self.buckets if x <= top), reverse=True):
            for k in reversed(key_buckets(capacity)):
                for q, n in dict.fromkeys(shapes + (long if b == 1 else [])):
                    if q > k or not graph_fits(b, q) or (1 < q <= QUERY_BUCKETS[-1] and not self.multi_row) or (
                            (b, q, capacity, k, n) in self.graphs):
                        continue
                    try:
                        self.graphs[(b, q, capacity, k, n)] = self._build(b, capacity, q, k, n)
                    except Exception as e:   # noqa: BLE001 - the step itself reports and falls back later
                        log.warning("CUDA graph warm-up stopped (%s: %s)", type(e).__name__, e)
                        return self.captures - before
        return self.captures - before

    def _follow_generation(self) -> None:
        """Drop the graphs (and their memory pool) of buffers the slot cache has replaced."""
        generation = self.backend._slots.generation
        if generation != self.generation:
            self.graphs.clear()   # they point at buffers that are gone (or about to be)
            self._pool = None
            self.generation = generation

    def _affordable(self, positions: int, slots: int) -> int:
        """`positions`, halved while the KV buffers for `slots` sequences that long would take more than
        `WARMUP_MEMORY_SHARE` of the GPU's free memory (a 7B model with a 131,072-position context would ask for
        tens of GB): longer contexts then grow the buffers when a run meets them."""
        import torch

        buf = self.backend._slots.keys[0]
        if buf.device.type != "cuda":
            return positions
        per_position = 2 * len(self.backend._slots.keys) * buf.shape[1] * buf.shape[3] * buf.element_size() * slots
        free = torch.cuda.mem_get_info(buf.device)[0]
        while positions > KEY_BUCKET_MIN and per_position * positions > WARMUP_MEMORY_SHARE * free:
            positions //= 2
        return positions

    # ------------------------------------------------------------------------------------------ building
    def _inputs(self, b: int, q: int, capacity: int, segments, ids: list[int], cache):
        """The step's static input (`_Graph.inputs`) on the host: [6, B * Q] integers, pinned on CUDA."""
        import torch

        pin = self.backend.device.type == "cuda"
        n = b * q
        mapped = _mapped(b, q)   # one slot, wherever it is: its rows are the graph's rows 0 .. Q-1
        if q > QUERY_BUCKETS[-1]:
            # A long prefill (one slot, up to thousands of rows): built with numpy, where lists of Python ints
            # turned into a tensor cost about a millisecond per stage of a SPRINT solve on its critical path.
            import numpy as np

            host = np.zeros((6, n), dtype=np.int64)
            host[1], host[2], host[4] = capacity - 1, 1, np.arange(n) // q
            for start, end, seq, pos0 in segments:
                base, m = (0 if mapped else seq.slot * q), end - start
                row = host[:, base:base + q]
                row[0, :m], row[0, m:] = ids[start:end], ids[end - 1]
                row[1, :m], row[1, m:] = np.arange(pos0, pos0 + m), pos0 + m - 1
                row[2, :m], row[2, m:] = np.arange(pos0 + 1, pos0 + m + 1), pos0 + m
                row[3] = 1
                row[4], row[5] = (seq.slot, 0) if mapped else cache.shares(seq.slot)   # `_build`
            out = torch.from_numpy(host)
            return out.pin_memory() if pin else out
        tok, pos, keys, real = [0] * n, [capacity - 1] * n, [1] * n, [0] * n   # dummy rows (see module doc)
        src, shared = [r // q for r in range(n)], [0] * n   # each row's slot's prefix source (`SlotCache.shares`)
        for start, end, seq, pos0 in segments:
            base, m = (0 if mapped else seq.slot * q), end - start
            pad = q - m   # a slot's rows past its last new token repeat that token (see module doc)
            tok[base:base + q] = ids[start:end] + [ids[end - 1]] * pad
            pos[base:base + q] = [*range(pos0, pos0 + m)] + [pos0 + m - 1] * pad
            keys[base:base + q] = [*range(pos0 + 1, pos0 + m + 1)] + [pos0 + m] * pad
            real[base:base + q] = [1] * q
            if mapped:   # a graph for any one slot: row 4 names it (`_build`)
                src[base:base + q] = [seq.slot] * q
                continue
            root, length = cache.shares(seq.slot)
            if length:
                src[base:base + q], shared[base:base + q] = [root] * q, [length] * q
        return torch.tensor([tok, pos, keys, real, src, shared], dtype=torch.long, pin_memory=pin)

    def _plan(self, g: _Graph, positions, lengths):
        """The static step plan: row r writes slot r // Q at its position and attends to its first `lengths[r]` keys
        (of the first K keys of its slot)."""
        import torch

        from sprint.backends.transformers_backend import SlotRows

        b = g.rows
        slots = torch.arange(b, device=g.inputs.device)
        q = g.queries
        return SlotRows(cache=self.backend._slots, capacity=g.capacity, slots=b, write_slot=g.write_slot,
                        write_pos=positions, single_rows=slots, single_slots=slots, lengths=lengths, span=b,
                        max_len=g.keys, chunks=[], full=False, aligned=True, queries=q,
                        # Per slot (its first row's). One slot shares with no other in the call: its attention
                        # skips the lookups (a sequential model's steps are all B = 1).
                        shared=(g.inputs[4, ::q], g.inputs[5, ::q]) if b > 1 else None,
                        slot_of=g.inputs[4, :1] if _mapped(b, q) else None)

    def _forward(self, g: _Graph) -> None:
        """The padded step (or S greedy steps) itself, writing the graph's output tensors in place. Between steps
        every real row takes its own argmax as its next token one position on; dummy rows stay where they are."""
        n = g.rows * g.queries
        ids, pos, lengths, real = g.inputs[:4]
        for j in range(g.steps):
            out = self.backend.model(input_ids=ids.view(1, n), position_ids=pos.view(1, n), use_cache=False,
                                     sprint_rows=self._plan(g, pos, lengths),
                                     logits_to_keep=0 if g.queries == 1 else g.keep)
            logits = out.logits[0]
            g.argmax[j].copy_(logits.argmax(-1))
            if j + 1 < g.steps:
                ids, pos, lengths = g.argmax[j], pos + real, lengths + real
        g.logits.copy_(logits)

    def _build(self, b: int, capacity: int, queries: int = 1, keys: int = 0, steps: int = 1) -> _Graph:
        import torch

        model, device = self.backend.model, self.backend.device
        cache = self.backend._slots
        vocab = model.get_output_embeddings().weight.shape[0]
        dtype = model.get_output_embeddings().weight.dtype
        inputs = torch.zeros((6, b * queries), dtype=torch.long, device=device)
        inputs[1].fill_(capacity - 1)
        inputs[2].fill_(1)
        write_slot = torch.arange(b, device=device).repeat_interleave(queries)
        inputs[4].copy_(write_slot)   # each slot its own prefix source (nothing shared) until a step says otherwise
        if _mapped(b, queries):
            write_slot = inputs[4]   # the slot the step names (`_inputs`)
        keep = torch.arange(b, device=device) * queries + queries - 1 if queries > 1 else None
        g = _Graph(rows=b, capacity=capacity, keys=keys or capacity, inputs=inputs,
                   logits=torch.empty((b, vocab), dtype=dtype, device=device),
                   argmax=torch.empty((steps, b), dtype=torch.long, device=device), queries=queries, keep=keep,
                   steps=steps,
                   write_slot=write_slot, buffers=[*cache.keys.values(), *cache.values.values()])
        self.captures += 1
        if not self.capture:
            return g
        with torch.no_grad(), self.backend._attention_kernels(torch):
            # Warm up on a side stream (lazy initialisation must not happen inside the capture), then capture. The
            # dummy rows write only position capacity - 1 (see module doc).
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self._forward(g)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # One pool for all of a generation's graphs (replays never overlap, every graph's outputs live outside
            # it): memory for the largest graph's activations, not for every graph's.
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            # thread_local: the event loop's thread may touch CUDA state (tokenizing does not, a user's code might).
            with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
                self._forward(g)
        g.graph = graph
        return g
