"""The split decode attention (`sprint.backends.kernels.attention`) when slots share a prefix: device time per decode
step, B slots x K keys, each slot's keys its own copy (as the slot cache holds them) or the shared prefix read from
one source slot (`shared=`), against one slot alone.

Why: a SPRINT stage runs its planner and up to seven executors side by side, and every executor's context is the
planner's text up to its prompt plus a few tokens, so the slots of a stage hold copies of one prefix. On an H200 an
8-slot step cost 357 us at 2,048 keys against 249 us for one slot (BENCHMARKS.md): the attention reads every copy.
Read from one slot, the copies are one piece of memory that the L2 cache serves after the first read.

The matrix products with the fused softmax (`decode_attention` when the split kernels do not take the shape) are timed
too, and a stage's own layout (slot 0 the planner, the others copies of its first keys: `planner_root_us`). Each
"step" is `--layers` attention calls (one per layer, each layer its own KV buffers, as in the model), captured in one
CUDA graph and replayed; microseconds per step, the median of `--repeats` timings of `--replays` replays.

    python benchmarks/bench_shared_attention.py [--batches 1 8] [--keys 256 1024 2048 4096] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics


def step_us(fn, replays: int, repeats: int) -> float:
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(replays):
            graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000 / replays)
    return statistics.median(times)


def main() -> None:
    from sprint.backends import kernels

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", type=int, nargs="*", default=[1, 2, 4, 8])
    ap.add_argument("--keys", type=int, nargs="*", default=[256, 1024, 2048, 4096])
    ap.add_argument("--suffix", type=int, default=150, help="keys of each slot after the shared prefix")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--capacity", type=int, default=8192)
    ap.add_argument("--replays", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE,...",
                    help="a configuration of `kernels`' module constants to time (repeatable; each its own rows), "
                         "e.g. ATTENTION_ONE_ROW_MIN_SLOT_KEYS=0 or ATTENTION_ONE_ROW_WARPS=2,ATTENTION_BLOCK_N=128")
    ap.add_argument("--out", help="append the rows to this file as JSON lines")
    args = ap.parse_args()
    configs = [dict(kv.split("=") for kv in c.split(",")) for c in args.set] or [{}]
    defaults = {name: getattr(kernels, name) for c in configs for name in c}
    for config in configs:
        for name, value in defaults.items():
            setattr(kernels, name, value)
        for name, value in config.items():
            setattr(kernels, name, int(value))
        rows = table(args, config)
        if args.out:
            with open(args.out, "a") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)


def table(args, config: dict) -> list[dict]:
    import torch

    from sprint.backends import kernels
    from sprint.backends.decode_attention import decode_attention

    dev, dt = "cuda", torch.bfloat16
    rows = []
    for b in args.batches:
        slots = b + 1   # the source slot lies past the call's slots (a planner that finished, say)
        caches = [(torch.randn(slots, args.heads, args.capacity, args.head_dim, device=dev, dtype=dt),
                   torch.randn(slots, args.heads, args.capacity, args.head_dim, device=dev, dtype=dt))
                  for _ in range(args.layers)]
        q = torch.randn(b, args.heads, 1, args.head_dim, device=dev, dtype=dt)
        for keys in args.keys:
            lengths = torch.full((b,), keys, device=dev)
            mask = (torch.arange(keys, device=dev) < lengths[:, None])[:, None, None, :]
            prefix = max(0, keys - args.suffix)
            src = torch.full((b,), b, device=dev, dtype=torch.int32)
            shared = torch.full((b,), prefix, device=dev, dtype=torch.int32)
            own = (torch.arange(b, device=dev, dtype=torch.int32), torch.zeros(b, device=dev, dtype=torch.int32))

            def products():
                for k, v in caches:
                    decode_attention(q, k[:b, :, :keys], v[:b, :, :keys], mask, 0.125, kernels)

            def run(sharing):
                def fn():
                    for k, v in caches:
                        if sharing is None:
                            kernels.attention(q, k[:b, :, :keys], v[:b, :, :keys], mask, 0.125)
                        else:
                            kernels.attention(q, k[:b, :, :keys], v[:b, :, :keys], mask, 0.125, sharing)
                return fn

            row = {"config": config, "B": b, "keys": keys, "shared_prefix": prefix,
                   "copies_us": round(step_us(run(None), args.replays, args.repeats), 1)}
            limit = kernels.ATTENTION_MAX_SLOT_KEYS
            kernels.ATTENTION_MAX_SLOT_KEYS = 0   # `decode_attention` then takes the matrix products
            row["products_us"] = round(step_us(products, args.replays, args.repeats), 1)
            kernels.ATTENTION_MAX_SLOT_KEYS = limit
            try:
                row["shared_us"] = round(step_us(run((src, shared)), args.replays, args.repeats), 1)
                row["nothing_shared_us"] = round(step_us(run(own), args.replays, args.repeats), 1)
            except TypeError:   # an older `kernels` without `shared` (timing the code before it)
                pass
            if b > 1 and "shared_us" in row:
                # A SPRINT stage's layout: slot 0 (the planner) shares nothing, the others copied its first keys.
                planner = (torch.zeros(b, device=dev, dtype=torch.int32), shared.clone())
                planner[1][0] = 0
                row["planner_root_us"] = round(step_us(run(planner), args.replays, args.repeats), 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


if __name__ == "__main__":
    main()
