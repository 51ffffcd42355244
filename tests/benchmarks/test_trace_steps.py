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
    assert all(0 <= k["launch_ms_per_pass"] <= k["ms_per_pass"] for k in summary["kinds"].values())
    # Every pass was planned and advanced on the loop's thread; both requests were encoded and finished.
    assert host["_plan"][0] == host["_advance"][0] == len(records)
    assert host["encode_prompt"][0] == 2 and host["_finish"][0] == 2 and host["_emit"][1] > 0


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
