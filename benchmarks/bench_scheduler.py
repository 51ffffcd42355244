"""The in-process backend's own per-step cost (scheduling, detokenizing, stop strings, queues, the thread hop), with the
model replaced by a fixed delay that releases the GIL, as a CUDA-graph replay on a GPU does.

Why: with CUDA graphs a small model's decode step is about a millisecond on an H200 (BENCHMARKS.md), so the host work
around it is a large share of every step, and a SPRINT stage has several streams (the planner and its executors) where
a sequential run has one. This measures that host work on any machine, without a GPU: each request "decodes" a fixed
script of token ids (the bundled model's own text, so detokenizing and stop scanning do real work), and every forward
pass is `time.sleep(delay)`. Reported: milliseconds per step, and the host's share beyond the delay.

    python benchmarks/bench_scheduler.py [--streams 1 7] [--delay-ms 0 1] [--tokens 300] [--repeats 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

from sprint.backends import TransformersBackend
from sprint.backends.base import GenerationParams
from sprint.models import resolve_model

TEXT = ("[88 83 15]\n88+83=171 [171 15] 80: 186> 156>\n88-83=5 [15 5] 80: 20< 10< 75< 3<\n88+15=103 [103 83] 80: "
        "186> 20<\n88-15=73 [83 73] 80: 156> 10<\n83+15=98 [98 88] 80: 186> 10<\n83-15=68 [88 68] 80: 156> 20<\n")


def make_backend(model: str) -> TransformersBackend:
    """The bundled model's tokenizer and slot cache; its forward pass is replaced by a delay (see `scripted_step`)."""
    return TransformersBackend(resolve_model(model), device="cpu", exact=False, max_batch=16)


def scripted_step(backend: TransformersBackend, script: list[int], delay: float):
    """A forward pass (`_eager_step`) that sleeps `delay` seconds (the GIL released, like a graph replay) and picks
    each request's next scripted token; `_step` around it does the rest of a real step."""

    def step(rows, ids, positions, sample):
        time.sleep(delay)
        return [script[(len(req.tokens) - len(req.prompt_ids)) % len(script)] for req, _ in sample]

    return step


class ModelledGraphs:
    """Stands in for the backend's CUDA graphs (`sprint.backends.decode_graphs.DecodeGraphs`) in the CPU models of
    the scheduler: each pass sleeps its modelled device time `cost(rows, steps)` (seconds, the GIL released, as a
    replay waits) and picks `pick(req, k)` for each sampling row's k-th step. The backend's own `_step` (launch
    callback, KV lengths, stats) and `_block` (when a pass may take several steps) stay in charge."""

    disabled = False

    def __init__(self, cost, pick, max_batch: int = 128) -> None:
        from sprint.backends.decode_graphs import buckets

        self.cost, self.pick = cost, pick
        self.buckets = buckets(max_batch)
        self.device_s = 0.0   # modelled device time so far

    def step(self, rows, ids, positions, sample, steps=1, launched=None):
        from sprint.backends.decode_graphs import partition

        if launched is not None:
            launched()
        # The graphs' own rule for which rows take a block (a joining prefill takes one step; one graph holding a
        # prefill takes one step for all): each sampling row's steps.
        parts = partition(rows.segments, steps, self.buckets) or []
        taken = {end - 1: s for _, _, segs, s in parts for _, end, _, _ in segs}
        steps = max(taken.values(), default=1)
        seconds = self.cost(rows, steps)
        self.device_s += seconds
        time.sleep(seconds)
        return [[self.pick(req, k) for k in range(taken.get(row, 1))] for req, row in sample]


async def run_streams(backend: TransformersBackend, streams: int, tokens: int,
                      lengths=None) -> tuple[float, int]:
    """`streams` requests decoding `tokens` each (or `lengths(i)` for request i), side by side, each consumed as a
    stream; returns (seconds, steps)."""
    before = backend.stats.forward_passes

    async def consume(i: int) -> int:
        n = 0
        params = GenerationParams(max_tokens=tokens if lengths is None else lengths(i),
                                  stop=["never appears in the script"])
        async for delta in backend.stream(f"<Question>\nstream {i}\n</Question>\n\n<think>\n", params):
            n += len(delta)
        return n

    t = time.perf_counter()
    await asyncio.gather(*(consume(i) for i in range(streams)))
    return time.perf_counter() - t, backend.stats.forward_passes - before


def measure(model: str, streams: int, delay_ms: float, tokens: int, repeats: int) -> dict:
    backend = make_backend(model)
    backend.eos_ids = set()
    script = backend.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    backend._eager_step = scripted_step(backend, script, delay_ms / 1000)
    per_step = []
    for _ in range(repeats):
        seconds, steps = asyncio.run(run_streams(backend, streams, tokens))
        per_step.append(1000 * seconds / steps)
    ms = statistics.median(per_step)
    return {"streams": streams, "delay_ms": delay_ms, "tokens": tokens, "ms_per_step": round(ms, 3),
            "host_ms_per_step": round(ms - delay_ms, 3), "runs": [round(x, 3) for x in per_step]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="countdown-sprint", help="model whose tokenizer is used (default: bundled)")
    ap.add_argument("--streams", type=int, nargs="+", default=[1, 7])
    ap.add_argument("--delay-ms", type=float, nargs="+", default=[0.0, 1.0])
    ap.add_argument("--tokens", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    rows = []
    print("streams  delay ms  ms/step  host ms/step")
    for streams in args.streams:
        for delay in args.delay_ms:
            r = measure(args.model, streams, delay, args.tokens, args.repeats)
            rows.append(r)
            print(f"{streams:7d}  {delay:8.2f}  {r['ms_per_step']:7.3f}  {r['host_ms_per_step']:12.3f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"rows": rows, "argv": sys.argv[1:]}, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
