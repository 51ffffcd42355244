"""Paired A/B of engine settings on the bundled Countdown pair: one process, one GPU, one problem at a time, the
variants alternating problem by problem, so that the machine's drift falls on both alike.

Why: two 100-problem latency runs of the same code on a lent H100 differed by up to 10% (BENCHMARKS.md, "stage ends,
waits by phase"), more than most engine changes move; runs of two code copies one after the other cannot resolve a
few percent. A setting that the engine reads from a module constant (`kernels.ATTENTION_PROGRAMS`,
`transformers_backend.IDLE_KEEP_S`, ...) or the interpreter's switch interval can instead be compared in one
process: each variant gets its own backends (built, warmed up and used with its settings applied, so CUDA graphs are
captured with them), and every problem is solved by each variant in turn (the order flipping from one problem to the
next).

    python benchmarks/countdown_gpu/flag_ab.py --n 100 --seed 1 --variant p512=kernels.ATTENTION_PROGRAMS=512
    python benchmarks/countdown_gpu/flag_ab.py --variant sw=switchinterval=0.0002 --models sprint
    python benchmarks/countdown_gpu/flag_ab.py --concurrency 64 --n 512 --models sprint \
        --variant blocks=transformers_backend.FULL_BATCH_BLOCKS=1

With `--concurrency C` (throughput, many problems in flight, as `sprint eval --concurrency C`): the problems go in
rounds of `--round` (default 2C); each variant solves a round C at a time, the variants taking turns round by round
(the order flipping each round), and what is compared is each round's elapsed time, summed over the rounds (the
per-round ratios are listed: with few rounds they say more than an interval would).

A variant is NAME=SETTING[,SETTING...]; a SETTING is `module.CONSTANT=value` (a module of `sprint.backends`, or
any module named in full: `sprint.inference.orchestrator.EXECUTOR_KEEP_KV=1`) or `switchinterval=SECONDS`. The
first variant is "base" (nothing changed) unless `--no-base`. Reported per model and variant: mean wall-clock per
problem, its ratio to the first variant's over the same problems with a 95% paired bootstrap interval, SPRINT's
wall-clock ratio to the sequential model's (the issue's latency target) per variant, how many answers agree with the
first variant's (greedy: the same, up to floating-point noise) and how many are correct.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency_table import bootstrap_ratio  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trace_steps import solve_all  # noqa: E402

METHODS = {"sprint": "countdown-sprint", "sequential": "countdown-sequential"}


def parse_variant(text: str) -> tuple[str, list[tuple[str, str]]]:
    """"name=mod.CONST=1,switchinterval=0.0002" -> (name, [(setting, value), ...])."""
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise ValueError(f"--variant: expected NAME=SETTING=VALUE[,...], got {text!r}")
    settings = []
    for part in rest.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise ValueError(f"--variant {name}: expected SETTING=VALUE, got {part!r}")
        if key != "switchinterval" and "." not in key:
            raise ValueError(f"--variant {name}: {key!r} is neither module.CONSTANT nor switchinterval")
        settings.append((key, value))
    return name, settings


def _value(old, text: str):
    """`text` as the type of the constant it replaces (bool constants take 0/1/true/false; a tuple of ints is
    written with colons, `6:7`, since commas part the settings)."""
    if isinstance(old, bool):
        return text.lower() in ("1", "true", "yes", "on")
    if isinstance(old, tuple):
        return tuple(int(x) for x in text.split(":") if x)
    return type(old)(text) if old is not None else text


@contextlib.contextmanager
def applied(settings: list[tuple[str, str]]):
    """The settings in force inside the block, the old values back after it."""
    undo = []
    try:
        for key, value in settings:
            if key == "switchinterval":
                undo.append((sys.setswitchinterval, sys.getswitchinterval()))
                sys.setswitchinterval(float(value))
                continue
            module_name, attr = key.rsplit(".", 1)
            if not module_name.startswith("sprint."):
                module_name = f"sprint.backends.{module_name}"
            module = importlib.import_module(module_name)
            if not hasattr(module, attr):
                raise ValueError(f"{module_name} has no constant {attr}")
            old = getattr(module, attr)
            undo.append((lambda v, m=module, a=attr: setattr(m, a, v), old))
            setattr(module, attr, _value(old, value))
        yield
    finally:
        for restore, old in reversed(undo):
            restore(old)


def summarize(records: list[dict], variants: list[str], models: list[str]) -> list[dict]:
    """Per model and variant: mean wall-clock, ratio to the first variant (paired bootstrap), answers agreeing."""
    rows = []
    first = variants[0]
    for model in models:
        by = {v: {r["id"]: r for r in records if r["model"] == model and r["variant"] == v} for v in variants}
        for v in variants:
            ids = [i for i in by[first] if i in by[v]]
            walls = [by[v][i]["wall_clock_s"] for i in ids]
            base = [by[first][i]["wall_clock_s"] for i in ids]
            lo, hi = bootstrap_ratio(walls, base) if ids else (float("nan"), float("nan"))
            rows.append({"model": model, "variant": v, "problems": len(ids),
                         "mean_wall_clock_s": round(statistics.mean(walls), 4) if walls else None,
                         "ratio_to_first": round(sum(walls) / sum(base), 3) if ids else None,
                         "ratio_ci95": [round(lo, 3), round(hi, 3)],
                         "answers_agree": sum(by[v][i]["answer"] == by[first][i]["answer"] for i in ids),
                         "solved": sum(bool(by[v][i].get("correct")) for i in ids)})
    if set(models) == set(METHODS):
        for v in variants:
            spr = {r["id"]: r for r in records if r["model"] == "sprint" and r["variant"] == v}
            seq = {r["id"]: r for r in records if r["model"] == "sequential" and r["variant"] == v}
            ids = [i for i in spr if i in seq]
            if ids:
                num, den = [spr[i]["wall_clock_s"] for i in ids], [seq[i]["wall_clock_s"] for i in ids]
                lo, hi = bootstrap_ratio(num, den)
                rows.append({"model": "sprint / sequential", "variant": v, "problems": len(ids),
                             "ratio": round(sum(num) / sum(den), 3), "ratio_ci95": [round(lo, 3), round(hi, 3)]})
    return rows


def summarize_rounds(records: list[dict], variants: list[str], models: list[str]) -> list[dict]:
    """Per model and variant, runs with many problems in flight: elapsed time over the rounds every variant finished,
    its ratio to the first variant's and the ratio per round, answers agreeing with the first variant's, solved."""
    rows = []
    first = variants[0]
    for model in models:
        mine = [r for r in records if r["model"] == model]
        rounds = sorted(set.intersection(*({r["round"] for r in mine if r["variant"] == v} for v in variants)))
        elapsed = {v: {r["round"]: r["round_s"] for r in mine if r["variant"] == v} for v in variants}
        answers = {v: {r["id"]: r for r in mine if r["variant"] == v and r["round"] in rounds} for v in variants}
        for v in variants:
            total, base = sum(elapsed[v][k] for k in rounds), sum(elapsed[first][k] for k in rounds)
            ids = [i for i in answers[first] if i in answers[v]]
            rows.append({"model": model, "variant": v, "rounds": len(rounds), "problems": len(ids),
                         "elapsed_s": round(total, 3), "ratio_to_first": round(total / base, 3) if base else None,
                         "round_ratios": [round(elapsed[v][k] / elapsed[first][k], 3) for k in rounds],
                         "answers_agree": sum(answers[v][i]["answer"] == answers[first][i]["answer"] for i in ids),
                         "solved": sum(bool(answers[v][i].get("correct")) for i in ids)})
    return rows


async def run(args, variants: list[tuple[str, list]]) -> list[dict]:
    from sprint.backends.transformers_backend import TransformersBackend
    from sprint.inference.baselines import BaselineConfig, solve_sequential
    from sprint.inference.orchestrator import SprintConfig, solve
    from sprint.models import COUNTDOWN_QUESTION_ORDER, default_settings, resolve_model
    from sprint.tasks.countdown.loader import grade_countdown, load_countdown

    items = load_countdown("test", args.n, args.seed, question_order=COUNTDOWN_QUESTION_ORDER)
    backends = {}
    for name, settings in variants:
        with applied(settings):   # graphs captured with the variant's settings
            for method in args.models:
                backend = TransformersBackend(str(resolve_model(METHODS[method])), device=args.device)
                warm = await backend.warmup(8 if args.concurrency <= 1 else None)   # None: up to max_batch rows
                print(json.dumps({"variant": name, "model": method, "warmup": warm}), flush=True)
                backends[(name, method)] = backend

    def solve_one(method, backend, item):
        config = default_settings(METHODS[method], method)
        if method == "sprint":
            return solve(item.question, backend, SprintConfig(**config))
        return solve_sequential(item.question, backend, BaselineConfig(**config))

    def record(item, name, method, result, **more):
        return {"id": item.id, "variant": name, "model": method, "wall_clock_s": result.wall_clock_s,
                "answer": result.answer, "correct": grade_countdown(result.answer or "", item),
                "sequential_tokens": result.sequential_tokens, **more}

    async def in_rounds(records: list[dict], began: float) -> None:
        """Rounds of problems, each solved by every variant `args.concurrency` at a time (module doc)."""
        size = args.round or 2 * args.concurrency
        for r, at in enumerate(range(0, len(items), size)):
            if args.time_limit and time.perf_counter() - began > args.time_limit:
                print(f"time limit: stopped after {r} rounds", file=sys.stderr, flush=True)
                return
            chunk = items[at:at + size]
            for name, settings in (variants if r % 2 == 0 else variants[::-1]):
                with applied(settings):
                    for method in args.models:
                        backend = backends[(name, method)]
                        start = time.perf_counter()
                        results = await solve_all(chunk, lambda item: solve_one(method, backend, item),
                                                  args.concurrency)
                        elapsed = time.perf_counter() - start
                        records += [record(item, name, method, res, round=r, round_s=round(elapsed, 6))
                                    for item, res in zip(chunk, results)]
            print(f"round {r + 1}: {at + len(chunk)}/{len(items)} problems", file=sys.stderr, flush=True)

    async def one_at_a_time(records: list[dict], began: float) -> None:
        """Problem by problem, each solved by every variant in turn (the order flipping each problem)."""
        for i, item in enumerate(items):
            if args.time_limit and time.perf_counter() - began > args.time_limit:
                # A device call killed from outside returns nothing; stopping here keeps the problems done so far.
                print(f"time limit: stopped after {i} problems", file=sys.stderr, flush=True)
                return
            for name, settings in (variants if i % 2 == 0 else variants[::-1]):
                with applied(settings):
                    for method in args.models:
                        start = time.perf_counter()
                        result = await solve_one(method, backends[(name, method)], item)
                        records.append(record(item, name, method, result,
                                              call_s=round(time.perf_counter() - start, 6)))
            if args.progress and (i + 1) % args.progress == 0:
                print(f"{i + 1}/{len(items)} problems", file=sys.stderr, flush=True)

    records: list[dict] = []
    try:
        await (in_rounds if args.concurrency > 1 else one_at_a_time)(records, time.perf_counter())
    finally:
        for backend in backends.values():
            await backend.aclose()
    return records


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", action="append", default=[], help="NAME=SETTING=VALUE[,...] (repeatable)")
    ap.add_argument("--no-base", action="store_true", help="no unchanged 'base' variant first")
    ap.add_argument("--models", nargs="+", choices=sorted(METHODS), default=["sprint", "sequential"])
    ap.add_argument("--n", type=int, default=100, help="held-out Countdown test problems")
    ap.add_argument("--concurrency", type=int, default=1,
                    help="problems in flight at once (default 1: one at a time, the latency setting)")
    ap.add_argument("--round", type=int, default=0,
                    help="with --concurrency: problems per round (default 2 x concurrency)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--progress", type=int, default=25, help="report every this many problems (0: never)")
    ap.add_argument("--out", type=Path, help="write every solve's record here (JSON lines)")
    ap.add_argument("--time-limit", type=float, default=0.0,
                    help="start no new problem after this many seconds of solving (0: no limit)")
    args = ap.parse_args(argv)
    variants = [] if args.no_base else [("base", [])]
    variants += [parse_variant(v) for v in args.variant]
    if len(variants) < 2:
        ap.error("give at least one --variant (and keep the base) to compare two")
    if len({name for name, _ in variants}) != len(variants):
        ap.error("variant names must differ")
    records = asyncio.run(run(args, variants))
    if args.out:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in records))
    names = [name for name, _ in variants]
    rows = summarize(records, names, args.models) if args.concurrency <= 1 else summarize_rounds(records, names,
                                                                                                   args.models)
    for row in rows:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
