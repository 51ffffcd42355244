"""Where a decode step of the in-process backend's fast mode spends its time, at a short and at a long context.

A model this small should decode in a few milliseconds per step on a GPU whatever its 1-2k context (the step is bound
by kernel launches); steps that slow down with the context point at per-step work that grows with it. For each
setting this prints, per context length and batch size:

  * the median / p90 time of decode-only steps (`TransformersBackend._step`, synchronised) and per generated token;
  * host<->device synchronisations per decode step, counted by `torch.cuda.set_sync_debug_mode("warn")`, with the
    Python lines that caused them (expected: 1, the `.tolist()` of the picked tokens);
  * which scaled_dot_product_attention kernel PyTorch picks for the step's decode call (`torch._fused_sdp_choice`);
  * a torch.profiler table of the profiled decode steps by self device time and by self CPU time (forward passes
    run in the calling thread there, so the profiler sees them), and the counts of CUDA runtime calls that wait
    (cudaStreamSynchronize, cudaDeviceSynchronize, cudaMemcpy, cudaMemcpyAsync, cudaHostAlloc, cudaMalloc).

`--sdpa` compares the backend's setting (`ours`: cuDNN attention off during forward passes) with PyTorch's own choice
(`pytorch`: on H100/H200 recent PyTorch prefers cuDNN, which builds a plan per distinct shape, and each decode step
has one key more than the last). EOS is disabled so every request generates `--new-tokens`. The requests' prompts
are first run once with a few tokens, so their KV sits in the prefix cache and the measured request prefills one
token (as in a staged SPRINT run); the profiled request is then almost only decode steps.

    python benchmarks/profile_decode.py [--model countdown-sprint] [--device auto] [--lengths 32 1100 2000]
        [--batches 1 8] [--new-tokens 32] [--sdpa ours pytorch] [--profile-steps 12] [--rows 18]

Under two minutes on one GPU with the defaults; on a CPU use e.g. `--lengths 32 1100 --batches 1 --sdpa ours`.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import json
import statistics
import sys
import time
import warnings

WAITING_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaMemcpy", "cudaMemcpyAsync",
                 "cudaHostAlloc", "cudaMalloc", "cudaEventSynchronize")


class Inline(concurrent.futures.Executor):
    """Runs the backend's forward passes in the event loop's thread (so torch.profiler sees their ops)."""

    def submit(self, fn, /, *args, **kwargs):
        fut: concurrent.futures.Future = concurrent.futures.Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as e:   # noqa: BLE001 - handed to the awaiting coroutine
            fut.set_exception(e)
        return fut


def make_prompts(tokenizer, length: int, batch: int) -> list[str]:
    """`batch` prompts of about `length` tokens: a Countdown question, then arithmetic lines; they differ in their last
    line, so each request has its own sequence (and shares the rest through the prefix cache)."""
    from sprint.format import layout

    question = "Using the numbers [71, 4, 40, 48], create an equation that equals 19."
    head = layout.generation_start(layout.prompt_prefix(question, "sprint"))
    lines = [f"{a} + {b} = {a + b}\n" for a in range(10, 99) for b in range(3, 40, 7)]
    text, ids = head, []
    for i in range(0, len(lines), 40):
        text += "".join(lines[i:i + 40])
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) >= length:
            break
    else:
        raise SystemExit(f"prompt text has only {len(ids)} tokens; lengths up to that are supported")
    base = tokenizer.decode(ids[:max(1, length - 8)])
    return [base + f"\n{i} * {i + 2} =" for i in range(batch)]


def sdpa_choice(backend, batch: int, length: int) -> str:
    """The kernel PyTorch picks for this step's batched decode call (unmasked at batch 1, masked otherwise)."""
    import torch

    cfg = backend.model.config
    kv = getattr(cfg, "num_key_value_heads", cfg.num_attention_heads)
    dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    group = cfg.num_attention_heads // kv
    dtype, dev = next(backend.model.parameters()).dtype, backend.device
    q = torch.zeros(batch, kv, group, dim, dtype=dtype, device=dev)
    k = torch.zeros(batch, kv, length, dim, dtype=dtype, device=dev)
    mask = None if batch == 1 else torch.ones(batch, 1, 1, length, dtype=torch.bool, device=dev)
    names = {int(b): name for name, b in torch.nn.attention.SDPBackend.__members__.items()}
    with backend._attention_kernels(torch):
        return names.get(int(torch._fused_sdp_choice(q, k, k, mask, 0.0, False)), "?")


def measure(backend, prompts: list[str], new_tokens: int, cuda: bool) -> dict:
    """One timed request per prompt (all together); decode-only steps with all of them are timed and their
    synchronisations counted."""
    import torch

    from sprint.backends import GenerationParams

    steps: list[float] = []
    syncs: list[int] = []
    where: collections.Counter = collections.Counter()
    inner = backend._step

    def step(rows, ids, positions, sample, *more):
        decode = len(ids) == len(prompts) == len(rows.segments)
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if cuda:
                torch.cuda.set_sync_debug_mode("warn")   # only around the step: not our synchronize() calls
            try:
                out = inner(rows, ids, positions, sample, *more)
            finally:
                if cuda:
                    torch.cuda.set_sync_debug_mode(0)
        if cuda:
            torch.cuda.synchronize()
        if decode:
            steps.append((time.perf_counter() - t0) / len(out[0]))   # per decode step of a multi-step block
            if cuda:
                mine = [w for w in caught if "synchroniz" in str(w.message)]
                syncs.append(len(mine))
                where.update(f"{w.filename.rsplit('/', 1)[-1]}:{w.lineno}" for w in mine)
        return out

    backend._step = step
    try:
        async def go():
            params = GenerationParams(max_tokens=new_tokens)
            return await asyncio.gather(*(backend.generate(p, params) for p in prompts))
        done = asyncio.run(go())
    finally:
        del backend._step
    steps.sort()
    return {"decode_steps": len(steps), "step_ms": round(statistics.median(steps) * 1e3, 2) if steps else None,
            "p90_ms": round(steps[int(0.9 * (len(steps) - 1))] * 1e3, 2) if steps else None,
            "ms_per_token": round(statistics.mean(c.decode_s / max(1, c.generated_tokens - 1) for c in done) * 1e3, 2),
            "prompt_tokens": done[0].prompt_tokens, "cached": done[0].cached_prompt_tokens,
            "syncs_per_step": round(statistics.mean(syncs), 2) if syncs else None,
            "sync_sites": dict(where.most_common(5))}


def profile(backend, prompts: list[str], new_tokens: int, cuda: bool, rows: int, label: str) -> None:
    import torch
    from torch.profiler import ProfilerActivity

    from sprint.backends import GenerationParams

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    saved, before = backend._executor, backend.stats.forward_passes
    backend._executor = Inline()
    try:
        async def go():
            params = GenerationParams(max_tokens=new_tokens)
            return await asyncio.gather(*(backend.generate(p, params) for p in prompts))
        with torch.profiler.profile(activities=acts) as prof:
            asyncio.run(go())
            if cuda:
                torch.cuda.synchronize()
    finally:
        backend._executor = saved
    events = prof.key_averages()
    steps = backend.stats.forward_passes - before
    print(f"\n=== torch.profiler: {label}: {steps} forward passes (the first prefills one token per request; "
          "Calls / passes = calls per step) ===")
    if cuda:
        print(events.table(sort_by="self_device_time_total", row_limit=rows, max_name_column_width=55))
    print(events.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=55))
    counts = {e.key: e.count for e in events if e.key in WAITING_CALLS + ("cudaLaunchKernel",)}
    sdpa = {e.key: e.count for e in events if "scaled_dot_product" in e.key or "cudnn" in e.key.lower()}
    print("runtime calls that may wait:", json.dumps(counts), "| attention ops:", json.dumps(sdpa))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="countdown-sprint", help="a bundled model name or a model directory")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--lengths", nargs="+", type=int, default=[32, 1100, 2000])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--sdpa", nargs="+", default=["ours", "pytorch"], choices=["ours", "pytorch"])
    ap.add_argument("--attention", nargs="+", default=["matmul"], choices=["matmul", "sdpa"],
                    help="decode rows' attention on CUDA: the backend's matrix products or SDPA (for comparison)")
    ap.add_argument("--decode-steps", type=int, default=1,
                    help="greedy decode steps per CUDA-graph replay (the backend's decode_steps; 1: one per step)")
    ap.add_argument("--profile-steps", type=int, default=12, help="tokens of each profiled request (0: no profiler)")
    ap.add_argument("--rows", type=int, default=18, help="rows of each profiler table")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import torch

    import sprint.backends.transformers_backend as tb
    from sprint.backends import TransformersBackend
    from sprint.models import resolve_model

    torch.set_num_threads(args.threads)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    cuda = device.startswith("cuda")
    started = time.perf_counter()
    default_slots = 128 if cuda else 8   # the backend's own default
    backend = TransformersBackend(str(resolve_model(args.model)), device=device, exact=False,
                                  max_batch=max(max(args.batches), default_slots))
    backend.eos_ids = set()
    backend.decode_steps = args.decode_steps
    env = {"torch": torch.__version__, "device": torch.cuda.get_device_name() if cuda else "cpu",
           "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if cuda else None,
           "dtype": str(next(backend.model.parameters()).dtype), "max_batch": backend.max_batch}
    print(json.dumps(env))
    rows = []
    for attention, sdpa in [(a, s) for a in args.attention for s in args.sdpa]:
        tb.AVOID_CUDNN_SDPA = sdpa == "ours"
        tb.MATMUL_DECODE_ATTENTION = attention == "matmul"
        if backend._graphs is not None:
            backend._graphs.graphs.clear()   # captured with the other attention
        for batch in args.batches:
            for n in args.lengths:
                prompts = make_prompts(backend.tokenizer, n, batch)
                backend._cache.clear()
                backend._cache.tokens = 0

                async def warm():
                    from sprint.backends import GenerationParams

                    return await asyncio.gather(*(backend.generate(p, GenerationParams(max_tokens=4))
                                                  for p in prompts))
                asyncio.run(warm())   # prompts' KV into the prefix cache; allocations; kernels
                row = measure(backend, prompts, args.new_tokens, cuda)
                row.update(attention=attention, sdpa=sdpa, batch=batch, length=n,
                           sdpa_kernel=sdpa_choice(backend, batch, row["prompt_tokens"] + args.new_tokens // 2))
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
                if args.profile_steps and n in (min(args.lengths), max(args.lengths)) and (
                        batch == min(args.batches) or n == max(args.lengths)):
                    profile(backend, prompts, args.profile_steps, cuda, args.rows,
                            f"attention={attention} sdpa={sdpa} batch={batch} prompt={row['prompt_tokens']}")
    tb.AVOID_CUDNN_SDPA, tb.MATMUL_DECODE_ATTENTION = True, True
    print(f"\n{'attention':>9} {'sdpa':>7} {'batch':>5} {'prompt':>6} {'step ms':>8} {'p90 ms':>7} {'ms/tok':>7} {'syncs':>5}  kernel"
          f"  (device {env['device']}, {args.new_tokens} new tokens)")
    for r in rows:
        print(f"{r['attention']:>9} {r['sdpa']:>7} {r['batch']:>5} {r['prompt_tokens']:>6} {r['step_ms'] or 0:>8.2f} "
              f"{r['p90_ms'] or 0:>7.2f} {r['ms_per_token']:>7.2f} {r['syncs_per_step'] or 0:>5}  {r['sdpa_kernel']}"
              f"  {r['sync_sites'] or ''}")
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
