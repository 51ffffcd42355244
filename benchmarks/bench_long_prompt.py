"""Time per decode step of the in-process transformers backend against prompt length, at batch 1.

A decode step's cost should barely depend on the context for a small model (attention over a few thousand keys is
cheap next to the linears), so a step that slows down with the prompt points at per-step work that scales with the
context somewhere in the backend. For each prompt length we first run the prompt's prefix (all but its last few
tokens) so its KV sits in the prefix cache, as in a staged Sprint run, then time the request itself: the median
forward-pass time (`TransformersBackend._step`) and the wall time per generated token (`decode_s` over the tokens
after the first, so host-side work such as detokenizing and stop scanning counts too). EOS is disabled so every
request generates `--new-tokens`.

    python benchmarks/bench_long_prompt.py [--model runs/m2/sprint] [--lengths 30 1100 3000] [--modes fast exact]
        [--threads 1] [--new-tokens 64] [--profile fast:3000]

For a per-op breakdown of decode steps on a GPU (sync counts, attention kernels), see benchmarks/profile_decode.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path


def long_text(tokenizer, n: int, data: Path) -> list[int]:
    """At least `n` token ids of real training text (the messages' last contents, concatenated)."""
    ids: list[int] = []
    with data.open() as f:
        for line in f:
            ids += tokenizer(json.loads(line)["messages"][-1]["content"], add_special_tokens=False)["input_ids"]
            if len(ids) >= n:
                return ids[:n]
    raise RuntimeError(f"{data}: fewer than {n} tokens")


def measure(backend, prompt: str, prefix: str, new_tokens: int) -> dict:
    from sprint.backends import GenerationParams

    steps: list[float] = []
    inner = backend._step

    def timed_step(rows, ids, positions, sample, *more):
        t0 = time.perf_counter()
        out = inner(rows, ids, positions, sample, *more)
        if backend.device.type == "cuda":
            import torch

            torch.cuda.synchronize()
        if len(ids) == 1:   # decode-only steps
            steps.append(time.perf_counter() - t0)
        return out

    backend._cache.clear()
    asyncio.run(backend.generate(prefix, GenerationParams(max_tokens=1)))   # the prefix's KV into the cache
    backend._step = timed_step
    try:
        c = asyncio.run(backend.generate(prompt, GenerationParams(max_tokens=new_tokens)))
    finally:
        del backend._step
    return {"prompt_tokens": c.prompt_tokens, "cached": c.cached_prompt_tokens, "ttft_s": round(c.ttft_s, 4),
            "step_ms": round(statistics.median(steps) * 1e3, 3),
            "ms_per_token": round(c.decode_s / max(1, c.generated_tokens - 1) * 1e3, 3)}


def profile(backend, prompt: str, prefix: str, new_tokens: int) -> None:
    """torch.profiler over one request (CPU ops, and CUDA kernels on a GPU); the forward passes run in the event
    loop's thread so that the profiler sees them. Prints the top ops by self CPU time and by device time."""
    import cProfile
    import pstats

    import torch
    from torch.profiler import ProfilerActivity

    from profile_decode import Inline   # benchmarks/profile_decode.py: runs forward passes in the calling thread

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if backend.device.type == "cuda" else [])
    saved = backend._executor
    backend._executor = Inline()
    try:
        with torch.profiler.profile(activities=acts, record_shapes=True) as prof:
            measure(backend, prompt, prefix, new_tokens)
        cp = cProfile.Profile()
        cp.enable()
        measure(backend, prompt, prefix, new_tokens)
        cp.disable()
    finally:
        backend._executor = saved
    table = prof.key_averages(group_by_input_shape=True)
    print(table.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=60))
    if backend.device.type == "cuda":
        print(table.table(sort_by="self_device_time_total", row_limit=20, max_name_column_width=60))
    pstats.Stats(cp).sort_stats("tottime").print_stats(30)


def model_path(name: str) -> str:
    """A model directory, or a bundled model's name (e.g. countdown-sprint)."""
    if Path(name).is_dir():
        return name
    from sprint.models import resolve_model

    return str(resolve_model(name))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="runs/m2/sprint")
    ap.add_argument("--data", default="_carry/data/sprint_train.jsonl")
    ap.add_argument("--lengths", nargs="+", type=int, default=[30, 1100, 3000])
    ap.add_argument("--modes", nargs="+", default=["fast", "exact"], choices=["fast", "exact"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-batch", type=int, default=None,
                    help="the backend's slots (default: its own, 8 on the CPU, 128 on a GPU)")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="runs per setting; the fastest is kept")
    ap.add_argument("--profile", default=None,
                    help="MODE:LENGTH to run once more under torch.profiler (forward passes in the event loop's thread)")
    args = ap.parse_args(argv)

    import torch

    from sprint.backends import TransformersBackend

    torch.set_num_threads(args.threads)
    rows = []
    for mode in args.modes:
        backend = TransformersBackend(model_path(args.model), device=args.device, exact=(mode == "exact"),
                                      max_batch=args.max_batch)
        backend.eos_ids = set()
        text_ids = long_text(backend.tokenizer, max(args.lengths), Path(args.data))
        for n in args.lengths:
            prompt = backend.tokenizer.decode(text_ids[:n - 1])
            prefix = backend.tokenizer.decode(text_ids[:max(1, n - 9)])
            measure(backend, prompt, prefix, 8)   # warm-up
            best = min((measure(backend, prompt, prefix, args.new_tokens) for _ in range(args.repeats)),
                       key=lambda r: r["ms_per_token"])
            best.update(mode=mode, length=n, threads=torch.get_num_threads())
            rows.append(best)
            print(json.dumps(best), file=sys.stderr)
            if args.profile == f"{mode}:{n}":
                profile(backend, prompt, prefix, args.new_tokens)
    print(f"{'mode':>5} {'prompt':>6} {'cached':>6} {'ttft s':>7} {'step ms':>8} {'ms/token':>9}  (threads "
          f"{args.threads}, {args.new_tokens} new tokens)")
    for r in rows:
        print(f"{r['mode']:>5} {r['prompt_tokens']:>6} {r['cached']:>6} {r['ttft_s']:>7.3f} {r['step_ms']:>8.2f} "
              f"{r['ms_per_token']:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
