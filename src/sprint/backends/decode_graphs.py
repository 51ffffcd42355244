"""CUDA graphs for the in-process backend's decode-only steps (fast mode): one graph launch per step instead of
hundreds of kernel launches from Python.

Why: a small model's decode step on a GPU is bound by the host, not the device. The bundled Countdown models (8
layers, hidden 256) take 7-9 ms per step on an H200 whatever the batch (BENCHMARKS.md), nearly all of it Python and
kernel launches; the device work is a fraction of a millisecond. A captured graph replays the whole forward pass
(embedding, every layer's projections, rotary, KV write, attention, the LM head and the greedy argmax) as one launch.

What is captured: the fast mode's *aligned* decode step at a fixed shape. A step qualifies when every row decodes
(one row per sequence, no prefill chunk). Its rows are laid out by slot: row s is slot s, for slots 0 .. B-1, where B
is the smallest bucket (1, 2, 4, ... up to `max_batch`) that holds the highest running slot. Slots without a
decoding sequence get a dummy row: token 0, written at the buffers' last position (capacity - 1), attending to one
key. That write is harmless: a free slot's keys are never read before a new sequence writes them, and a running
sequence cannot own position capacity - 1 yet (it would need a larger capacity this step, which means new buffers
and a new graph); the real rows write their own positions after. Attention runs over the whole capacity with a
key-length mask, so the shapes depend only on (B, capacity).

A graph is keyed by (B, capacity) and bound to the slot cache's buffers of one *generation*: `SlotCache` bumps its
generation whenever it allocates or drops buffers, and the graphs of an older generation are dropped (they point at
the old buffers, which they keep alive until then). With graphs on, the backend keeps its buffers when it idles
(else every SPRINT stage, which begins after the planner's request ends, would re-allocate and re-capture).

Host traffic per step: one copy of 3 x B integers in (ids, positions, key lengths), one `.tolist()` of B picked
tokens out; sampling rows (temperature > 0) and the `on_logits` observer read their rows of the graph's logits.

`capture=False` runs the same padded step eagerly (no graph): the layout and masking logic is then testable on a
CPU, where CUDA graphs do not exist. A model whose forward pass cannot be captured (one that reads device values on
the host, as dynamic RoPE scaling does) logs a warning at the first capture and decodes eagerly from then on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


def buckets(max_batch: int) -> list[int]:
    """Row counts a graph is captured for: powers of two below `max_batch`, and `max_batch` itself."""
    out, b = [], 1
    while b < max_batch:
        out.append(b)
        b *= 2
    return out + [max_batch]


@dataclass
class _Graph:
    """One captured step: its static input [3, B] (ids, positions, key lengths), outputs and the buffers it uses."""

    rows: int
    capacity: int
    inputs: Any
    logits: Any
    argmax: Any
    graph: Any = None
    buffers: list = field(default_factory=list)   # the generation's KV buffers, kept alive while the graph lives


class DecodeGraphs:
    """Captures and replays decode-only steps of a fast-mode `TransformersBackend` (see module doc)."""

    def __init__(self, backend, *, capture: bool = True) -> None:
        self.backend = backend
        self.capture = capture
        self.buckets = buckets(backend.max_batch)
        self.graphs: dict[tuple[int, int], _Graph] = {}
        self.generation = -1
        self.disabled = False   # set when a capture fails: the model then decodes eagerly
        self.captures = 0   # graphs captured (or eager stand-ins built)

    def bucket(self, span: int) -> int | None:
        for b in self.buckets:
            if b >= span:
                return b
        return None

    def step(self, rows, ids: list[int], positions: list[int], sample) -> list[int] | None:
        """Run a step through a graph and return each sampling row's pick, or None when the step does not qualify
        (a prefill chunk in it, or the layers' buffers not built yet): the caller then runs it eagerly."""
        import torch

        segments = rows.segments
        if self.disabled or not segments or any(end - start != 1 for start, end, _, _ in segments):
            return None
        cache = self.backend._slots
        n_layers = getattr(self.backend.model.config, "num_hidden_layers", None)
        if not n_layers or len(cache.keys) != n_layers:
            # The first step of a run is a prefill, which builds every layer's buffers. (A config without
            # num_hidden_layers cannot say when that is done: such a model decodes eagerly.)
            return None
        span = max(seq.slot for _, _, seq, _ in segments) + 1
        b = self.bucket(span)
        if b is None:
            return None
        needed = max(positions) + 1
        for layer in list(cache.keys):
            cache.ensure(layer, cache.keys[layer], cache.values[layer], needed, b)
        if cache.generation != self.generation:
            self.graphs.clear()   # they point at buffers that are gone (or about to be)
            self.generation = cache.generation
        capacity = cache.keys[0].shape[2]
        g = self.graphs.get((b, capacity))
        if g is None:
            try:
                g = self.graphs[(b, capacity)] = self._build(b, capacity)
            except Exception as e:   # noqa: BLE001 - any capture failure: this model decodes eagerly from now on
                log.warning("CUDA graph capture failed (%s: %s); decoding without CUDA graphs", type(e).__name__, e)
                self.disabled = True
                self.graphs.clear()
                return None
        tok, pos, keys = [0] * b, [capacity - 1] * b, [1] * b   # dummy rows (see module doc)
        slot_of_row = {}
        for start, _end, seq, pos0 in segments:
            tok[seq.slot], pos[seq.slot], keys[seq.slot] = ids[start], pos0, pos0 + 1
            slot_of_row[start] = seq.slot
        host = torch.tensor([tok, pos, keys], dtype=torch.long, pin_memory=self.backend.device.type == "cuda")
        g.inputs.copy_(host, non_blocking=True)   # complete before the .tolist() below returns
        with torch.no_grad():
            if g.graph is not None:
                g.graph.replay()
            else:
                self._forward(g)
        by_slot = g.argmax.tolist()
        order = [slot_of_row[row] for _, row in sample]   # sample[i]'s slot
        sampled = [i for i, (req, _) in enumerate(sample) if req.params.temperature > 0]
        host: dict = {}
        if sampled:   # one device-to-host copy for the sampling rows' logits
            slots = torch.tensor([order[i] for i in sampled], device=g.logits.device)
            host = dict(zip(sampled, g.logits.index_select(0, slots).float().cpu()))
        return self.backend._picks(sample, [by_slot[s] for s in order], lambda i: g.logits[order[i]], host)

    # ------------------------------------------------------------------------------------------ building
    def _plan(self, g: _Graph):
        """The static step plan: row s writes slot s at its position and attends to its first `lengths[s]` keys."""
        import torch

        from sprint.backends.transformers_backend import SlotRows

        b = g.rows
        slots = torch.arange(b, device=g.inputs.device)
        return SlotRows(cache=self.backend._slots, capacity=g.capacity, slots=b, write_slot=slots,
                        write_pos=g.inputs[1], single_rows=slots, single_slots=slots, lengths=g.inputs[2], span=b,
                        max_len=g.capacity, chunks=[], full=False, aligned=True)

    def _forward(self, g: _Graph) -> None:
        """The padded step itself, writing the graph's output tensors in place."""
        b = g.rows
        out = self.backend.model(input_ids=g.inputs[0].view(1, b), position_ids=g.inputs[1].view(1, b),
                                 use_cache=False, sprint_rows=self._plan(g), logits_to_keep=0)
        logits = out.logits[0]
        g.logits.copy_(logits)
        g.argmax.copy_(logits.argmax(-1))

    def _build(self, b: int, capacity: int) -> _Graph:
        import torch

        model, device = self.backend.model, self.backend.device
        cache = self.backend._slots
        vocab = model.get_output_embeddings().weight.shape[0]
        dtype = model.get_output_embeddings().weight.dtype
        inputs = torch.zeros((3, b), dtype=torch.long, device=device)
        inputs[1].fill_(capacity - 1)
        inputs[2].fill_(1)
        g = _Graph(rows=b, capacity=capacity, inputs=inputs, logits=torch.empty((b, vocab), dtype=dtype, device=device),
                   argmax=torch.empty(b, dtype=torch.long, device=device),
                   buffers=[*cache.keys.values(), *cache.values.values()])
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
            # thread_local: the event loop's thread may touch CUDA state (tokenizing does not, a user's code might).
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self._forward(g)
        g.graph = graph
        return g
