"""Whole Countdown solves of the bundled pair with the model's forward pass replaced by a modelled GPU step cost:
the host's share of a SPRINT solve (orchestrator, prompts, tokenizing, prefix lookups, the scheduler) measured on any
machine, against the sequential model's.

Why: on an H200 with CUDA graphs a decode step of the bundled models costs about a millisecond, so what the host does
between steps and between stages decides how much of SPRINT's token saving reaches the wall-clock (BENCHMARKS.md, the
seventh pair's wall-clock). Measuring that on a rented GPU costs device time; this runs on a CPU.

How: each problem is first solved for real (fast mode on the CPU, greedy), recording every request's picked tokens by
its prompt. The replay runs the same solves (the real orchestrator and baseline, the real `TransformersBackend`
scheduler, detokenizer, stop scanner, prefix cache and queues) with `_eager_step` replaced: it sleeps the modelled
step cost with the GIL released (as a graph replay does) and returns each request's recorded next token, so every
request generates what the real model generated and the solve takes the same path. Step cost model (`--decode-ms`,
`--eager-ms`): a step whose longest segment fits a CUDA graph's largest query bucket costs `decode-ms`, a longer
prefill `eager-ms` (the H200 numbers of BENCHMARKS.md: graph steps about 1 ms, an eager step 6-12 ms).

Reported per model: mean wall-clock per solve, the modelled device time (the sum of the step costs), the host's share
beyond it, sequential tokens, and ms per sequential token; then SPRINT's wall-clock ratio to the sequential model's.
The ratio is a model, not a GPU measurement: it says how the host side moves it, and the GPU confirms.

    python benchmarks/bench_solve_host.py [--n 5] [--decode-ms 1.0] [--eager-ms 8.0] [--repeats 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scheduler import ModelledGraphs  # noqa: E402

from sprint.backends import TransformersBackend  # noqa: E402
from sprint.backends.decode_graphs import QUERY_BUCKETS  # noqa: E402
from sprint.models import default_settings, resolve_model  # noqa: E402

PAIR = {"sprint": "countdown-sprint", "sequential": "countdown-sequential"}


def make_backend(method: str) -> TransformersBackend:
    """The method's bundled model in the fast mode on the CPU (recorded and replayed alike)."""
    return TransformersBackend(resolve_model(PAIR[method]), device="cpu", exact=False, max_batch=16)


def solver(method: str, backend: TransformersBackend):
    from sprint.inference.baselines import BaselineConfig, solve_sequential
    from sprint.inference.orchestrator import SprintConfig, solve

    settings = default_settings(PAIR[method], method)
    if method == "sprint":
        cfg = SprintConfig(**settings)
        return lambda q: solve(q, backend, cfg, backend.tokenizer)
    cfg = BaselineConfig(**settings)
    return lambda q: solve_sequential(q, backend, cfg, backend.tokenizer)


def record(method: str, questions: list[str], threads: int, results: list | None = None
           ) -> dict[tuple[int, ...], list[int]]:
    """Solve each question for real and return every request's picked tokens, keyed by its prompt's token ids (the
    solves' results appended to `results` if given)."""
    import torch

    torch.set_num_threads(threads)
    backend = make_backend(method)
    picks: dict[tuple[int, ...], list[int]] = {}
    real = backend._eager_step

    def step(rows, ids, positions, sample):
        out = real(rows, ids, positions, sample)
        for (req, _), tok in zip(sample, out):
            picks.setdefault(tuple(req.prompt_ids), []).append(tok)
        return out

    backend._eager_step = step
    solve = solver(method, backend)
    for q in questions:
        res = asyncio.run(solve(q))
        if results is not None:
            results.append(res)
    return picks


def replay(method: str, questions: list[str], picks, decode_ms: float, eager_ms: float,
           decode_steps: int = 1) -> list[dict]:
    """The same solves with each forward pass replaced by the modelled step cost (module doc). `decode_steps` > 1:
    decode-only passes take that many greedy steps at once (as the CUDA graphs do), costing `decode_ms` each."""
    backend = make_backend(method)
    strays = []

    def cost(rows, steps):   # fits a graph, or eager
        longest = max(end - start for start, end, _, _ in rows.segments)
        return (decode_ms * steps if longest <= QUERY_BUCKETS[-1] else eager_ms) / 1000

    def pick(req, k):
        script = picks.get(tuple(req.prompt_ids))
        if script is None:   # the backend turns this into a failed request; `replay` raises after the solve
            strays.append(len(req.prompt_ids))
            raise RuntimeError("no recorded picks for this prompt")
        # Steps past the recorded end (a block running on past a stop) are dropped by the backend.
        return script[min(len(req.tokens) - len(req.prompt_ids) + k, len(script) - 1)]

    # The backend's own step and block rule around modelled passes.
    backend._graphs = ModelledGraphs(cost, pick, backend.max_batch)
    backend.decode_steps = decode_steps
    solve = solver(method, backend)
    rows = []
    for q in questions:
        backend._graphs.device_s = 0.0
        start = time.perf_counter()
        res = asyncio.run(solve(q))
        wall = time.perf_counter() - start
        if strays:
            raise RuntimeError(f"{method}: a request the recorded solves did not make (a prompt of {strays[0]} "
                               f"tokens): the replay left the recorded path; record again (--picks)")
        rows.append({"wall_s": wall, "device_s": backend._graphs.device_s, "sequential_tokens": res.sequential_tokens,
                     "stages": res.stages, "trajectory": res.trajectory})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5, help="held-out Countdown test problems (seed 1, asked sorted)")
    ap.add_argument("--decode-ms", type=float, default=1.0, help="modelled cost of a CUDA-graph step")
    ap.add_argument("--eager-ms", type=float, default=8.0, help="modelled cost of an eager (long prefill) step")
    ap.add_argument("--decode-steps", type=int, default=1,
                    help="greedy decode steps per decode-only pass, each costing --decode-ms (the GPU default: 4)")
    ap.add_argument("--repeats", type=int, default=2,
                    help="replays per problem: the median is kept (of two, the faster)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the recording solves")
    ap.add_argument("--out", type=Path, help="write the numbers as JSON")
    ap.add_argument("--picks", type=Path, help="folder for the recorded picks: read if there (same --n), else written "
                    "(replays without re-solving; record again after changing the models or the prompts)")
    ap.add_argument("--only", choices=sorted(PAIR), help="replay one model only (e.g. under a profiler)")
    args = ap.parse_args(argv)

    from sprint.models import countdown_question_order
    from sprint.tasks.countdown.loader import load_countdown

    items = load_countdown("test", args.n, 1, question_order=countdown_question_order(list(PAIR.values())))
    questions = [item.question for item in items]
    summary = {}
    for method in [args.only] if args.only else PAIR:
        saved = args.picks / f"{method}_n{args.n}.json" if args.picks else None
        if saved and saved.exists():
            picks = {tuple(prompt): toks for prompt, toks in json.loads(saved.read_text())}
        else:
            t = time.perf_counter()
            picks = record(method, questions, args.threads)
            print(f"{method}: recorded {len(questions)} solves in {time.perf_counter() - t:.0f} s", file=sys.stderr)
            if saved:
                saved.parent.mkdir(parents=True, exist_ok=True)
                saved.write_text(json.dumps([[list(prompt), toks] for prompt, toks in picks.items()]))
        runs = [replay(method, questions, picks, args.decode_ms, args.eager_ms, args.decode_steps)
                for _ in range(args.repeats)]
        # Per problem the median replay; of two, the faster (the slower one is the noisier).
        per_problem = [sorted(rs, key=lambda r: r["wall_s"])[(len(rs) - 1) // 2] for rs in zip(*runs)]
        wall = statistics.fmean(r["wall_s"] for r in per_problem)
        device = statistics.fmean(r["device_s"] for r in per_problem)
        tokens = statistics.fmean(r["sequential_tokens"] for r in per_problem)
        summary[method] = {"wall_s": wall, "device_s": device, "host_s": wall - device, "sequential_tokens": tokens,
                           "ms_per_sequential_token": 1000 * wall / tokens,
                           "problems": [{k: v for k, v in r.items() if k != "trajectory"} for r in per_problem]}
    print("| model | mean wall-clock s | modelled device s | host beyond it s | sequential tokens "
          "| ms per seq. token |")
    print("|---|---|---|---|---|---|")
    for method, s in summary.items():
        print(f"| {PAIR[method]} | {s['wall_s']:.3f} | {s['device_s']:.3f} | {s['host_s']:.3f} | "
              f"{s['sequential_tokens']:.0f} | {s['ms_per_sequential_token']:.2f} |")
    ratio = summary["sprint"]["wall_s"] / summary["sequential"]["wall_s"] if len(summary) == 2 else None
    if ratio is not None:
        print(f"wall-clock ratio (SPRINT / sequential), modelled: {ratio:.2f}")
    if args.out:
        meta = {"command": " ".join(["python", "benchmarks/bench_solve_host.py", *(argv or sys.argv[1:])]),
                "python": platform.python_version(), "machine": platform.machine(), "n": args.n,
                "decode_ms": args.decode_ms, "eager_ms": args.eager_ms, "decode_steps": args.decode_steps,
                "repeats": args.repeats}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"meta": meta, "ratio": ratio, "models": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
