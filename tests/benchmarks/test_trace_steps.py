"""`benchmarks/trace_steps.py` records every forward pass of the real backend (its wrapper must follow
`TransformersBackend._step`'s signature), classifies it, and its summary accounts for every token produced."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("torch")

from sprint.backends import GenerationParams  # noqa: E402
from sprint.models import resolve_model  # noqa: E402


def test_trace_records_and_summarizes_the_passes_of_a_run(load_benchmark):
    from sprint.backends.decode_graphs import DecodeGraphs
    from sprint.backends.transformers_backend import TransformersBackend

    mod = load_benchmark("benchmarks/trace_steps.py")
    backend = TransformersBackend(str(resolve_model("countdown-sprint")), device="cpu", exact=False, max_batch=4)
    backend._graphs = DecodeGraphs(backend, capture=False)   # the graph steps' layout, run eagerly (no CUDA here)
    backend.decode_steps = 1
    records = mod.trace(backend)
    host = mod.time_host(backend)

    async def run():
        params = GenerationParams(max_tokens=6)
        out = await asyncio.gather(backend.generate("<Question>\nUsing the numbers [1, 2, 3, 4]", params),
                                   backend.generate("<Question>\nUsing the numbers [5, 6, 7, 8]", params))
        await backend.aclose()
        return out

    completions = asyncio.run(run())
    kinds = {kind for _, _, kind, _, _, _ in records}
    assert "decode x1" in kinds and kinds <= {"decode x1", "join 8", "join 32", "join 64", "long prefill", "eager"}
    assert all(end >= launched >= start for start, end, _, _, _, launched in records)
    summary = mod.summarize(records, solves=1, wall=1.0)
    tokens = sum(k["tokens_per_solve"] for k in summary["kinds"].values())
    assert tokens == sum(c.generated_tokens for c in completions)
    assert summary["between_ms_per_solve"] >= 0 and summary["wall_ms_per_solve"] == 1000.0
    assert 0 <= summary["resume_ms_per_solve"] <= summary["between_ms_per_solve"]
    assert len(records.resumed) == len(records)   # the scheduler came back after every pass
    assert all(0 <= k["launch_ms_per_pass"] <= k["ms_per_pass"] for k in summary["kinds"].values())
    # Every pass was planned and advanced on the loop's thread; both requests were encoded and finished.
    assert host["_plan"][0] == host["_advance"][0] == len(records)
    assert host["encode_prompt"][0] == 2 and host["_finish"][0] == 2 and host["_emit"][1] > 0
    assert {"_slots.copy_prefix", "_slots.export", "_drop_deferred"} <= set(host)


def test_watch_loop_counts_the_time_the_loop_waits(load_benchmark):
    import time

    mod = load_benchmark("benchmarks/trace_steps.py")

    async def run():
        idle = mod.watch_loop(asyncio.get_running_loop())
        start = time.perf_counter()
        await asyncio.sleep(0.05)   # waiting: idle
        time.sleep(0.05)            # working (the loop's thread is busy)
        return idle["s"], time.perf_counter() - start

    idle, wall = asyncio.run(run())
    assert 0.04 <= idle <= wall - 0.04


def test_boundaries_split_a_requests_wait_into_its_phases(load_benchmark):
    """`boundaries`: a stage's planner after its last executor, phase by phase from that executor's end (the call
    returning, the orchestrator, the stage text, tokenizing, admission, launch, the pass, the first text), and the
    KV keeping inside the wait; an executor's wait from its own call."""
    mod = load_benchmark("benchmarks/trace_steps.py")
    ms = 0.001
    life = {
        "ex": {"role": "executor", "call": 0.0, "submit": 0.5 * ms, "attach": 1 * ms, "text": 4 * ms,
               "finish": 10 * ms, "prompt": 80, "drops": [(10.2 * ms, 10.4 * ms)]},
        "pl": {"role": "planner", "call": 12 * ms, "submit": 15 * ms, "attach": 16 * ms, "text": 20 * ms,
               "prompt": 1500, "drops": []},
        None: [(11 * ms, "returned", "executor"), (11.5 * ms, "stage_context", None)],
    }
    # (start, end, kind, B, tokens, launched): the executor's first pass, then the planner's long prefill
    records = [(1.2 * ms, 2 * ms, "join 8", 2, 2, 1.5 * ms), (16.5 * ms, 18 * ms, "long prefill", 1, 1, 17 * ms)]
    waits = mod.boundaries(life, records)
    planner = waits["planner after executor"]
    expected = {"react": 2, "encode": 3, "admit": 1, "launch": 1, "pass": 1, "text": 2, "total": 10,
                "drop_store": 0.2, "react: to the caller": 1, "react: orchestrator": 0.5, "react: stage text": 0.5}
    assert planner["n"] == 1 and planner["first pass: long prefill"] == 1
    assert all(planner[k] == pytest.approx(v) for k, v in expected.items())
    executor = waits["executor"]
    assert executor["total"] == pytest.approx(4) and executor["pass"] == pytest.approx(0.5)


def test_a_call_after_a_cut_call_waits_from_that_calls_return(load_benchmark):
    """A planner call the orchestrator cut short returns before its request finishes (cancelled at the scheduler's
    next turn, after the next call began): the next call's wait counts from that return, not from an earlier
    request's finish."""
    mod = load_benchmark("benchmarks/trace_steps.py")
    ms = 0.001
    life = {
        "ex": {"role": "executor", "call": 0.0, "submit": 0.1 * ms, "attach": 0.2 * ms, "text": 1 * ms,
               "finish": 2 * ms, "prompt": 80, "drops": []},
        "cut": {"role": "planner", "call": 3 * ms, "submit": 3.1 * ms, "attach": 3.2 * ms, "text": 5 * ms,
                "finish": 16.5 * ms, "prompt": 1500, "drops": []},
        "next": {"role": "planner", "call": 16 * ms, "submit": 16.5 * ms, "attach": 17 * ms, "text": 19 * ms,
                 "prompt": 1510, "drops": []},
        None: [(2.1 * ms, "returned", "executor"), (15.5 * ms, "returned", "planner"),
               (15.8 * ms, "stage_context", None)],
    }
    records = [(3.3 * ms, 4 * ms, "long prefill", 1, 1, 3.4 * ms), (17.2 * ms, 18 * ms, "join 32", 1, 1, 17.5 * ms)]
    waits = mod.boundaries(life, records)
    cut = waits["planner after a cut call"]
    assert cut["n"] == 1 and cut["react"] == pytest.approx(0.5) and cut["total"] == pytest.approx(3.5)
    assert waits["planner after executor"]["react"] == pytest.approx(1)   # the cut call itself, after the executor


def test_solve_all_keeps_order_and_at_most_concurrency_in_flight(load_benchmark):
    mod = load_benchmark("benchmarks/trace_steps.py")
    flight, peak = [0], [0]

    async def solve_one(item):
        flight[0] += 1
        peak[0] = max(peak[0], flight[0])
        await asyncio.sleep(0.001 * (5 - item % 5))   # later items finish first: order must come from the items
        flight[0] -= 1
        return item * 10

    assert asyncio.run(mod.solve_all(list(range(12)), solve_one, 3)) == [i * 10 for i in range(12)]
    assert peak[0] == 3
    peak[0] = 0
    assert asyncio.run(mod.solve_all(list(range(4)), solve_one)) == [0, 10, 20, 30]
    assert peak[0] == 1   # one after another: the latency setting
