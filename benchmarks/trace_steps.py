"""Where a one-at-a-time Countdown solve's wall-clock goes, forward pass by forward pass (in-process backend).

`latency_table.py` says SPRINT's tokens cost more than the sequential model's; this says why. Each forward pass of
the backend is recorded with its kind and its time (host work inside the step plus the device work it waits for):

  * `decode xS`: a decode-only step, S greedy steps per CUDA-graph replay (S = 1 when a request waits to join a
    batch that is not full, or one is near the end of the context);
  * `join Q`: a step in which some sequence brings up to Q new tokens (an executor's prompt after its shared prefix,
    the question);
  * `long prefill`: a lone sequence's long prefill in a graph (the planner reading a stage's executions);
  * `split N` (`split N xS`): N graph replays (decoding rows in one, S steps of them with `SPLIT_BLOCKS`, each
    prefill in a graph of its own slot);
  * `eager`: a step no graph took.

and the time between passes (`between`: the scheduler's host work that does not overlap the device). Per kind:
passes, slots (the graph's B bucket, mean), tokens produced, milliseconds. Then, with `--replay`, the device alone:
each captured decode graph replayed back to back (no host work), microseconds per decode step by B, K (keys) and S,
which separates the device's cost of a wider batch from the host's. The summary also gives, per pass kind, the worker's
host time before the launch (`launch_ms_per_pass`), and per solve the event loop's busy time, the backend's host
methods' calls and milliseconds (`host_ms_per_solve`) and the prompt tokens prefilled (not served from cached KV),
and what each kind of request waits for before its first text, phase by phase (`waits_ms`: a stage's planner after
its executors or after a planner, an executor; see `boundaries`).

`--concurrency C` solves C problems at once (as `sprint eval --concurrency C` does): the passes of a loaded engine,
where a SPRINT problem took 7-8x the sequential model's wall-clock with 64 in flight (H200, BENCHMARKS.md); the
per-solve numbers are then the run's totals over the problems.

    python benchmarks/trace_steps.py --device cuda --n 20 [--model countdown-sprint --method sprint] [--replay]
        [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import time


def classify(rows, graphs) -> tuple[str, int]:
    """(kind, B) of the forward pass just taken (see the module doc; the graphs say what they ran: `last_kind`)."""
    segments = rows.segments
    span = max(getattr(seq, "slot", 0) for _, _, seq, _ in segments) + 1
    kind = graphs.last_kind if graphs is not None and not graphs.disabled else None
    if kind is None:
        return "eager", span
    from sprint.backends.decode_graphs import fit

    return kind, (1 if kind == "long prefill" else fit(graphs.buckets, span) or span)


async def solve_all(items, solve_one, concurrency: int = 1) -> list:
    """`solve_one(item)` for every item, `concurrency` at a time (1: one after another, the latency setting), the
    results in the items' order."""
    if concurrency <= 1:
        return [await solve_one(item) for item in items]
    gate = asyncio.Semaphore(concurrency)

    async def one(item):
        async with gate:
            return await solve_one(item)

    return list(await asyncio.gather(*(one(item) for item in items)))


def trace(backend):
    """Wrap `backend._step` to record every forward pass: (start, end, kind, B, tokens produced, launched), launched
    the time the step was on the device (the worker's host work before it: preparing the inputs and the launch)."""
    records = _Records()
    inner = backend._step

    def step(rows, ids, positions, sample, steps=1, launched=None):
        start = time.perf_counter()
        at = [start]

        def on_launch():
            at[0] = time.perf_counter()
            if launched is not None:
                launched()

        picks = inner(rows, ids, positions, sample, steps, on_launch)
        end = time.perf_counter()
        kind, b = classify(rows, backend._graphs)
        records.append((start, end, kind, b, sum(len(p) for p in picks), at[0]))
        return picks

    backend._step = step
    inner_advance = backend._advance

    def advance(*args, **kwargs):   # the scheduler back on the loop after a pass: `summarize` splits the gap here
        records.resumed.append(time.perf_counter())
        return inner_advance(*args, **kwargs)

    backend._advance = advance
    return records


class _Records(list):
    """The passes, and when the scheduler resumed after each (`resumed`, ascending)."""

    def __init__(self) -> None:
        super().__init__()
        self.resumed: list[float] = []


#: The backend's host work on the event loop's thread, timed per method by `time_host`.
HOST_METHODS = ("_plan", "_advance", "_emit", "_attach_prefix", "_drop_store", "_drop_deferred", "_finish",
                "encode_prompt", "count_tokens", "_slots.copy_prefix", "_slots.export")


def time_host(backend) -> dict:
    """Wrap the backend's host methods (HOST_METHODS) to accumulate [calls, seconds] each, every call counted (a
    nested one under both names: `_advance` calls `_emit` and `_finish`, `_finish` may call `_drop_store`)."""
    totals = {name: [0, 0.0] for name in HOST_METHODS}
    for name in HOST_METHODS:
        owner = backend
        *path, attr = name.split(".")   # "_slots.copy_prefix": a method of the backend's slot cache
        for part in path:
            owner = getattr(owner, part)
        inner = getattr(owner, attr)

        def timed(*args, _inner=inner, _name=name, **kwargs):
            start = time.perf_counter()
            try:
                return _inner(*args, **kwargs)
            finally:
                t = totals[_name]
                t[0] += 1
                t[1] += time.perf_counter() - start

        setattr(owner, attr, timed)
    return totals


def watch_loop(loop) -> dict:
    """Accumulate the time the event loop's thread waits in its selector (idle): the rest of the wall-clock it spends
    on the scheduler, the text work and the callers it wakes."""
    idle = {"s": 0.0}
    selector = loop._selector
    select = selector.select

    def timed(timeout=None):
        start = time.perf_counter()
        try:
            return select(timeout)
        finally:
            idle["s"] += time.perf_counter() - start

    selector.select = timed
    return idle


def watch_requests(backend) -> dict:
    """Record each request's life on the backend's clock (perf_counter): submitted (before and after its prompt is
    tokenized), admitted (`_attach_prefix`, with the prompt tokens reused), first text handed to its caller, finished,
    and each keeping of a finished request's KV (`_drop_store`, start and end). Keyed by request; `role` is
    "planner" for a request that may write a final answer, else "executor" (or "sequential" for a request with no
    stop strings)."""
    from sprint.format import tags as T

    life: dict = {}
    inner_submit, inner_attach, inner_emit = backend._submit, backend._attach_prefix, backend._emit
    inner_finish, inner_drop = backend._finish, backend._drop_store
    final = T.close_tag(T.FINAL_ANSWER)

    def submit(prompt, params):
        t0 = time.perf_counter()
        req = inner_submit(prompt, params)
        role = "planner" if final in params.stop else ("executor" if params.stop else "sequential")
        life[req] = {"role": role, "call": t0, "submit": time.perf_counter(), "prompt": len(req.prompt_ids),
                     "drops": []}
        return req

    def attach(req):
        inner_attach(req)
        if req in life:
            life[req].update(attach=time.perf_counter(), reused=req.cached)

    def emit(reqs):
        inner_emit(reqs)
        now = time.perf_counter()
        for req in reqs:
            rec = life.get(req)
            if rec is not None and "text" not in rec and req.read_offset > len(req.prompt_ids):
                rec["text"] = now

    def finish(req, reason):
        if req in life and "finish" not in life[req]:
            life[req]["finish"] = time.perf_counter()
        inner_finish(req, reason)

    def drop(req):
        t0 = time.perf_counter()
        inner_drop(req)
        if req in life:
            life[req]["drops"].append((t0, time.perf_counter()))

    backend._submit, backend._attach_prefix, backend._emit = submit, attach, emit
    backend._finish, backend._drop_store = finish, drop

    # The orchestrator's side of a stage's end: when each call returns to it, when it starts the next stage's text.
    from sprint.format import incremental
    from sprint.inference import calls

    events = life[None] = []
    inner_call, inner_context = calls.CallLog.call, incremental.stage_context

    async def call(self, role, *args, **kwargs):
        try:
            return await inner_call(self, role, *args, **kwargs)
        finally:
            events.append((time.perf_counter(), "returned", role))

    def stage_context(*args, **kwargs):
        events.append((time.perf_counter(), "stage_context", None))
        return inner_context(*args, **kwargs)

    calls.CallLog.call, incremental.stage_context = call, stage_context
    return life


def boundaries(life: dict, records) -> dict:
    """Each later request's wait for its first text, split into what it waited for (milliseconds, means): a stage's
    planner from its previous stage's last finishing request, an executor from its submission. Phases: `react`
    (previous request finished -> the next one's call: the orchestrator), `encode` (the call: tokenizing), `admit`
    (submitted -> admitted: the pass in flight, keeping finished requests' KV), `launch` (admitted -> the launch of
    the first pass it is in), `pass` (that pass's launch -> its end), `text` (-> first text handed over, after later
    passes when the first was a prefill chunk). Also the time spent keeping KV (`_drop_store`) inside each wait."""
    events = life.get(None, [])
    reqs = sorted(((k, v) for k, v in life.items() if k is not None), key=lambda kv: kv[1]["call"])
    out: dict = collections.defaultdict(lambda: collections.defaultdict(float))
    counts: collections.Counter = collections.Counter()
    finished = [rec for _, rec in reqs if "finish" in rec]
    for req, rec in reqs:
        if "text" not in rec or "attach" not in rec:
            continue
        if rec["role"] == "planner" and rec["prompt"] > 64:
            prev = [r for r in finished if r["finish"] < rec["call"]]
            if not prev:
                continue
            last = max(prev, key=lambda r: r["finish"])
            if last["finish"] < rec["call"] - 0.05:   # a pause between solves
                continue
            # A call its caller ended early (the orchestrator cutting a planner that went past its plan) returns
            # before its request finishes (the scheduler cancels it at its next turn): the wait starts at that
            # return, and the request's later finish must not make an earlier one look like the last.
            back = [t for t, what, _ in events if what == "returned" and last["finish"] < t <= rec["call"]]
            cut = [r for r in finished if r["finish"] >= rec["call"] and r["call"] < rec["call"]]
            if cut and back:
                kind, start = "planner after a cut call", back[-1]
            else:
                kind, start = f"planner after {last['role']}", last["finish"]
        elif rec["role"] == "executor":
            kind, start = "executor", rec["call"]
        else:
            continue
        first = next((r for r in records if r[5] >= rec["attach"]), None)   # (start, end, kind, B, tokens, launched)
        if first is None:
            continue
        phases = {"react": rec["call"] - start, "encode": rec["submit"] - rec["call"],
                  "admit": rec["attach"] - rec["submit"], "launch": first[5] - rec["attach"],
                  "pass": first[1] - first[5], "text": rec["text"] - first[1], "total": rec["text"] - start,
                  "drop_store": sum(b - a for _, other in reqs for a, b in other["drops"]
                                    if start <= a and b <= rec["text"])}
        if kind.startswith("planner"):   # react = the call returning to the orchestrator, then its own work
            back = next((t for t, what, _ in events if what == "returned" and start <= t <= rec["call"]), None)
            ctx = next((t for t, what, _ in events if what == "stage_context" and start <= t <= rec["call"]), None)
            if back is not None and ctx is not None and back <= ctx:
                phases.update({"react: to the caller": back - start, "react: orchestrator": ctx - back,
                               "react: stage text": rec["call"] - ctx})
        counts[kind] += 1
        for k, v in phases.items():
            out[kind][k] += v
        out[kind][f"first pass: {first[2]}"] += 1
    result = {}
    for kind, sums in out.items():
        n = counts[kind]
        result[kind] = {"n": n, **{k: (round(1000 * v / n, 3) if not k.startswith("first pass") else int(v))
                                   for k, v in sums.items()}}
    return result


def summarize(records, solves: int, wall: float) -> dict:
    """Per kind: passes, mean B, tokens, ms (per solve), and the host time between passes."""
    import bisect

    kinds: dict = collections.defaultdict(lambda: [0, 0, 0, 0.0, 0.0])
    between = resume = 0.0
    resumed = getattr(records, "resumed", [])
    for i, (start, end, kind, b, tokens, launched) in enumerate(records):
        k = kinds[kind]
        k[0] += 1
        k[1] += b
        k[2] += tokens
        k[3] += end - start
        k[4] += launched - start
        if i:
            prev = records[i - 1][1]
            gap = start - prev
            if gap < 0.05:   # a pause between solves is not a step's cost
                between += gap
                j = bisect.bisect_left(resumed, prev)
                if j < len(resumed) and resumed[j] <= start:
                    resume += resumed[j] - prev
    out = {"solves": solves, "wall_ms_per_solve": round(1000 * wall / solves, 1),
           "between_ms_per_solve": round(1000 * between / solves, 1),
           # of it: from a pass's end until the scheduler is back on the event loop (the loop busy with other work,
           # the thread hand-over); the rest is the scheduler's own work up to the next pass (admissions, planning)
           "resume_ms_per_solve": round(1000 * resume / solves, 1), "kinds": {}}
    for kind, (n, b, tokens, t, prep) in sorted(kinds.items(), key=lambda kv: -kv[1][3]):
        out["kinds"][kind] = {"passes_per_solve": round(n / solves, 1), "mean_B": round(b / n, 2),
                              "tokens_per_solve": round(tokens / solves, 1), "ms_per_solve": round(1000 * t / solves, 1),
                              "ms_per_pass": round(1000 * t / n, 3), "launch_ms_per_pass": round(1000 * prep / n, 3)}
    return out


def replay_times(backend, repeats: int = 50) -> list[dict]:
    """Device time of each captured decode graph (Q = 1), replayed back to back: microseconds per decode step."""
    import torch

    out = []
    for (b, q, capacity, k, s), g in sorted(backend._graphs.graphs.items()):
        if q != 1 or g.graph is None:
            continue
        g.graph.replay()   # warm
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            g.graph.replay()
        end.record()
        torch.cuda.synchronize()
        out.append({"B": b, "K": k, "S": s, "us_per_step": round(1000 * start.elapsed_time(end) / (repeats * s), 1)})
    return out


def replay_kernels(backend, batches: list[int], repeats: int = 20) -> None:
    """Print the kernels of one decode step's graph replay (S = 1, the smallest key bucket) per batch bucket B: calls
    and microseconds per replay, by kernel name, so the kernels a wider batch adds or slows stand out."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    for b in batches:
        keys = sorted((k for k in backend._graphs.graphs if k[0] == b and k[1] == 1 and k[4] == 1), key=lambda k: k[3])
        if not keys:
            continue
        g = backend._graphs.graphs[keys[0]]
        g.graph.replay()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(repeats):
                g.graph.replay()
            torch.cuda.synchronize()
        rows = collections.defaultdict(lambda: [0, 0.0])
        for e in prof.events():
            if e.device_type == torch.autograd.DeviceType.CUDA:
                rows[e.name][0] += 1
                rows[e.name][1] += e.device_time
        total = sum(t for _, t in rows.values()) / repeats
        print(f"# kernels of one decode step, B={b} K={keys[0][3]}: {total:.1f} us of kernels per replay")
        for name, (n, t) in sorted(rows.items(), key=lambda kv: -kv[1][1]):
            print(f"  {n / repeats:5.1f} x {t / n:6.2f} us  {name[:110]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="countdown-sprint", help="a bundled model name or a model directory")
    ap.add_argument("--method", default="sprint", choices=["sprint", "sequential"])
    ap.add_argument("--n", type=int, default=20, help="held-out Countdown test problems, one at a time")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--decode-steps", type=int, default=None, help="greedy decode steps per graph replay")
    ap.add_argument("--concurrency", type=int, default=1, help="problems in flight at once (default 1)")
    ap.add_argument("--replay", action="store_true", help="also time every decode graph's replay alone")
    ap.add_argument("--kernels", type=int, nargs="*", default=[],
                    help="batch buckets whose decode graph's kernels to list (torch.profiler)")
    ap.add_argument("--plain-rope", action="store_true",
                    help="rotary embeddings as transformers computes them (no token-major views), for comparison")
    ap.add_argument("--contiguous-splits", action="store_true",
                    help="fused projections hand out contiguous copies of their slices (sprint.backends.fuse)")
    ap.add_argument("--profile-loop", type=int, default=0, metavar="N",
                    help="also print the N functions the run spends most time in (cProfile; started on the event "
                         "loop's thread, on Python >= 3.12 it sees the forward thread too)")
    ap.add_argument("--switch-interval", type=float, default=None,
                    help="sys.setswitchinterval (seconds) for the run: how soon a thread waiting for the GIL gets it")
    ap.add_argument("--no-fused-kernels", action="store_true",
                    help="PyTorch's own kernels instead of the fused Triton ones (sprint.backends.kernels)")
    ap.add_argument("--no-split-attention", action="store_true",
                    help="decode attention as two matrix products around the fused softmax, not the split kernels")
    ap.add_argument("--extra-buckets", type=int, nargs="*", default=[],
                    help="graph row counts besides the powers of two (sprint.backends.decode_graphs.EXTRA_BUCKETS)")
    args = ap.parse_args(argv)
    if args.switch_interval is not None:
        import sys

        sys.setswitchinterval(args.switch_interval)

    from sprint.backends import decode_graphs, fuse, transformers_backend

    transformers_backend.TOKEN_MAJOR_ROPE = not args.plain_rope
    transformers_backend.FUSED_KERNELS = not args.no_fused_kernels
    if args.no_split_attention:
        from sprint.backends import kernels

        kernels.ATTENTION_MAX_ROWS = 0
    fuse.CONTIGUOUS_SPLITS = args.contiguous_splits
    decode_graphs.EXTRA_BUCKETS = tuple(args.extra_buckets)

    from sprint.backends.transformers_backend import TransformersBackend
    from sprint.inference.baselines import BaselineConfig, solve_sequential
    from sprint.inference.orchestrator import SprintConfig, solve
    from sprint.models import COUNTDOWN_QUESTION_ORDER, default_settings, resolve_model
    from sprint.tasks.countdown.loader import load_countdown

    kw = {} if args.decode_steps is None else {"decode_steps": args.decode_steps}
    backend = TransformersBackend(str(resolve_model(args.model)), device=args.device, **kw)
    settings = default_settings(args.model, args.method)
    items = load_countdown("test", args.n, args.seed, question_order=COUNTDOWN_QUESTION_ORDER)

    async def run():
        warm = await backend.warmup(8 if args.concurrency <= 1 else None)   # None: graphs up to max_batch rows
        prefilled = backend.stats.prefilled_tokens
        records = trace(backend)
        host = time_host(backend)
        life = watch_requests(backend)
        idle = watch_loop(asyncio.get_running_loop())

        def solve_one(item):
            if args.method == "sprint":
                return solve(item.question, backend, SprintConfig(**settings))
            return solve_sequential(item.question, backend, BaselineConfig(**settings))

        if args.profile_loop:   # the event loop's thread only: the forward passes run in the backend's worker
            profiler.enable()
        start = time.perf_counter()
        await solve_all(items, solve_one, args.concurrency)
        wall = time.perf_counter() - start
        profiler.disable()
        busy = wall - idle["s"]
        await backend.aclose()
        return warm, records, wall, busy, host, backend.stats.prefilled_tokens - prefilled, life

    import cProfile

    profiler = cProfile.Profile()
    warm, records, wall, busy, host, prefilled, life = asyncio.run(run())
    print(json.dumps({"model": args.model, "method": args.method, "concurrency": args.concurrency,
                      "engine": repr(backend), "warmup": warm,
                      "token_major_rope": not args.plain_rope, "contiguous_splits": args.contiguous_splits,
                      "extra_buckets": args.extra_buckets, "fused_kernels": backend.fused_kernels}))
    summary = summarize(records, len(items), wall)
    summary["loop_busy_ms_per_solve"] = round(1000 * busy / len(items), 1)
    summary["prefilled_tokens_per_solve"] = round(prefilled / len(items), 1)   # prompt tokens not served from KV
    summary["host_ms_per_solve"] = {name: [round(n / len(items), 1), round(1000 * t / len(items), 2)]
                                    for name, (n, t) in host.items()}   # [calls, ms] per solve
    summary["waits_ms"] = boundaries(life, records)   # what a request waits for before its first text
    print(json.dumps(summary, indent=1))
    if args.profile_loop:
        import pstats

        pstats.Stats(profiler).sort_stats("tottime").print_stats(args.profile_loop)
    if args.replay and backend._graphs is not None and not backend._graphs.disabled:
        for row in replay_times(backend):
            print(json.dumps(row))
    if args.kernels and backend._graphs is not None and not backend._graphs.disabled:
        replay_kernels(backend, args.kernels)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
