"""Orchestration overhead per problem: the wall-clock of a SPRINT run during which no call is waiting on the backend.

`TimedBackend` wraps a backend and keeps the union of the intervals in which at least one coroutine is suspended
inside a backend call (awaiting the next streamed delta, or a whole generation). Overhead = wall-clock - that union:
time the orchestrator spends on its own work (parsing the stream, building contexts, dispatching, records, token
metrics) while nothing waits on the model. Token counting through the backend's tokenizer is shown separately (it is
orchestration bookkeeping, included in the overhead).

Workloads:
  scripted-replay   ScriptedBackend with zero delay replaying the paper's released MATH-500 trajectories (real
                    plans, prompts and executions; 4-character deltas). Backend time is ~0, so this is the
                    orchestrator's cost per problem.
  tiny-model        the in-process transformers backend on a tiny random Llama (CPU), real MATH-500 questions.
                    A random model writes no prompts, so this exercises planner streams, repairs and forced answers.
  tiny-executors    the released plans replayed as the planner (zero delay) with the executors decoding for real on
                    the tiny model, side by side: eager dispatch against a real batched backend.

    python benchmarks/bench_orchestration.py [--problems 100] [--tiny-problems 8] [--skip-tiny]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sprint.backends.base import ScriptedBackend
from sprint.format import parse
from sprint.inference import SprintConfig, solve
from sprint.testing.replay import replay_model
from sprint.testing.scripted import call_kind

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


class _Clock:
    """Union of busy intervals (depth counter) and time spent counting tokens."""

    def __init__(self):
        self.depth = 0
        self.since = 0.0
        self.busy = 0.0
        self.counting = 0.0

    def enter(self):
        if self.depth == 0:
            self.since = time.perf_counter()
        self.depth += 1

    def leave(self):
        self.depth -= 1
        if self.depth == 0:
            self.busy += time.perf_counter() - self.since


class _TimedStream:
    def __init__(self, inner, clock: _Clock):
        self.inner, self.clock = inner, clock
        self._it = inner.__aiter__()

    def __aiter__(self):
        return self

    async def __anext__(self):
        self.clock.enter()
        try:
            return await self._it.__anext__()
        finally:
            self.clock.leave()

    async def aclose(self):
        close = getattr(self.inner, "aclose", None)
        if close is not None:
            await close()

    @property
    def completion(self):
        return getattr(self.inner, "completion", None)


class TimedBackend:
    """A backend wrapper that measures time spent waiting on the wrapped backend."""

    def __init__(self, inner, executors_only_on=None):
        self.inner = inner
        self.clock = _Clock()
        self.route = executors_only_on   # optional: (planner_backend, executor_backend)

    def _pick(self, prompt):
        if self.route is None:
            return self.inner
        planner, executor = self.route
        return executor if call_kind(prompt)[0] == "executor" else planner

    def stream(self, prompt, params):
        return _TimedStream(self._pick(prompt).stream(prompt, params), self.clock)

    async def generate(self, prompt, params):
        self.clock.enter()
        try:
            return await self._pick(prompt).generate(prompt, params)
        finally:
            self.clock.leave()

    def count_tokens(self, text):
        t = time.perf_counter()
        try:
            return self.inner.count_tokens(text)
        finally:
            self.clock.counting += time.perf_counter() - t


async def _measure(question: str, backend: TimedBackend, config: SprintConfig, tokenizer=None) -> dict:
    c = backend.clock
    c.busy = c.counting = 0.0
    t = time.perf_counter()
    r = await solve(question, backend, config, tokenizer)
    wall = time.perf_counter() - t
    return {"wall": wall, "backend": c.busy, "overhead": wall - c.busy, "counting": c.counting,
            "calls": len(r.calls), "executors": sum(1 for x in r.calls if x.role == "executor"),
            "chars": len(r.trajectory), "repairs": len(r.repairs)}


def _references(n: int):
    files = sorted((SHARED / "fixtures" / "sprint_reference" / "math500_sprint").glob("*.txt"))
    if not files:
        sys.exit(f"no reference trajectories under {SHARED}")
    trajs = [parse(p.read_text()) for p in files]
    return [t for t in trajs if t.ok][:n]


def bench_scripted(n: int) -> list[dict]:
    rows = []
    for ref in _references(n):
        model = replay_model(ref)
        backend = TimedBackend(ScriptedBackend(model, chunk=4))
        cfg = SprintConfig(max_stages=len(ref.stages) + 2)
        rows.append(asyncio.run(_measure(ref.question, backend, cfg)))
    return rows


def _tiny_backend(tmp: Path):
    from sprint.backends.transformers_backend import TransformersBackend
    from sprint.testing import build_tiny_llama, build_tiny_tokenizer

    tok = build_tiny_tokenizer(tmp)
    build_tiny_llama(tmp, tok, seed=0, max_position_embeddings=16384)  # replayed contexts exceed 2048 tiny tokens
    return TransformersBackend(str(tmp), device="cpu", max_batch=8)


def bench_tiny(n: int, tmp: Path) -> list[dict]:
    backend = _tiny_backend(tmp)
    questions = [json.loads(x)["problem"] for x in (SHARED / "data" / "math500.jsonl").read_text().splitlines()[:n]]
    cfg = SprintConfig(max_stages=4, max_plan_tokens=64, max_exec_tokens=32, max_answer_tokens=16)
    timed = TimedBackend(backend)
    rows = []
    for q in questions:
        rows.append(asyncio.run(_run_closing(q, timed, cfg, backend)))
    return rows


async def _run_closing(q, timed, cfg, backend):
    try:
        return await _measure(q, timed, cfg, backend.tokenizer)
    finally:
        await backend.aclose()


def bench_tiny_executors(n: int, tmp: Path) -> list[dict]:
    backend = _tiny_backend(tmp)
    rows = []
    for ref in _references(n):
        planner = ScriptedBackend(replay_model(ref), chunk=4)
        timed = TimedBackend(backend, executors_only_on=(planner, backend))
        cfg = SprintConfig(max_stages=len(ref.stages) + 2, max_exec_tokens=24)
        rows.append(asyncio.run(_run_closing(ref.question, timed, cfg, backend)))
    return rows


def _summary(name: str, rows: list[dict]) -> str:
    def med(k):
        return statistics.median(r[k] for r in rows)

    def mean(k):
        return statistics.fmean(r[k] for r in rows)

    per_call = statistics.fmean(r["overhead"] / r["calls"] for r in rows) * 1e3
    return (f"| {name} | {len(rows)} | {mean('calls'):.1f} | {mean('executors'):.1f} | {mean('wall') * 1e3:.1f} | "
            f"{mean('backend') * 1e3:.1f} | {mean('overhead') * 1e3:.1f} | {med('overhead') * 1e3:.1f} | "
            f"{per_call:.2f} | {mean('counting') * 1e3:.1f} | "
            f"{100 * sum(r['overhead'] for r in rows) / sum(r['wall'] for r in rows):.1f}% |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", type=int, default=100, help="reference trajectories for scripted-replay")
    ap.add_argument("--tiny-problems", type=int, default=8, help="problems for the tiny-model workloads")
    ap.add_argument("--skip-tiny", action="store_true")
    args = ap.parse_args(argv)
    lines = ["| workload | problems | calls/problem | executors/problem | wall ms (mean) | in backend ms | "
             "overhead ms (mean) | overhead ms (median) | overhead ms/call | token counting ms | overhead share |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines.append(_summary("scripted-replay (zero delay)", bench_scripted(args.problems)))
    print(lines[-1], flush=True)
    if not args.skip_tiny:
        with tempfile.TemporaryDirectory() as d:
            lines.append(_summary("tiny-model (CPU, random Llama)", bench_tiny(args.tiny_problems, Path(d) / "a")))
            print(lines[-1], flush=True)
            lines.append(_summary("tiny-executors (replayed plans, CPU)",
                                  bench_tiny_executors(args.tiny_problems, Path(d) / "b")))
            print(lines[-1], flush=True)
    print()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
