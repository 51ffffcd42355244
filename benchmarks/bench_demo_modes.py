"""`sprint demo`'s two solves in the CPU's exact mode and in the fast mode: the same trajectories, and how long each
takes (`TransformersBackend(exact=...)`).

Why: the demo is the first thing a user runs, offline on a CPU. The exact mode (the CPU default) computes every
stream on its own so that a request's output never depends on its batch; the fast mode runs all decoding streams in
one batched call per layer. The demo needs no batch invariance, so it uses the fast mode if that gives the same
results.

    python benchmarks/bench_demo_modes.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys


def main(argv: list[str] | None = None) -> int:
    from sprint.backends import load_backend
    from sprint.inference.app import METHODS, make_config
    from sprint.inference.demo import PAIRS, pick_question
    from sprint.models import default_settings

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="the demo's --seed values")
    args = ap.parse_args(argv)
    for seed in args.seeds:
        question = pick_question(None, seed)
        runs = {}
        for exact in (True, False):
            for model, method in PAIRS:
                backend = load_backend(model, None, device="cpu", exact=exact)
                config = make_config(method, **default_settings(model, method))
                runs[(exact, method)] = asyncio.run(METHODS[method](question, backend, config, backend.tokenizer,
                                                                    id=model))
        for method in dict(PAIRS).values():
            exact, fast = runs[(True, method)], runs[(False, method)]
            print(json.dumps({"seed": seed, "method": method, "same_trajectory": exact.trajectory == fast.trajectory,
                              "answer": fast.answer, "sequential_tokens": fast.sequential_tokens,
                              "exact_s": round(exact.wall_clock_s, 2), "fast_s": round(fast.wall_clock_s, 2)}),
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
