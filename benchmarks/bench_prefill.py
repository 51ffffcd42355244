"""Time to first token of a long prompt prefilled in one eager step, as a SPRINT planner's stage start prefills a
stage's executions (~1,100-1,300 tokens after its cached context).

Why: on an H200 the bundled SPRINT model's planner waited 24-35 ms per stage for its first token (BENCHMARKS.md, the
seventh pair's latency with the matrix-product attention), several times an eager forward pass of the model. This
splits that wait: each prompt is asked twice in a row, first with an empty prefix cache (the whole prompt prefilled),
then again (all but its last token cached), and prompts of new and of already-seen lengths alternate, so a cost that comes with a new shape (cuBLAS or
attention kernel selection for a row count not seen before) shows apart from the prefill itself.

    python benchmarks/bench_prefill.py [--device cuda] [--model countdown-sprint] [--lengths 1100 1150 1100 2400 ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="countdown-sprint")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--lengths", nargs="+", type=int, default=[1100, 1150, 1100, 1233, 2400, 2450, 2400, 1150, 3300])
    args = ap.parse_args(argv)

    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from profile_decode import make_prompts

    from sprint.backends import GenerationParams, TransformersBackend
    from sprint.models import resolve_model

    backend = TransformersBackend(str(resolve_model(args.model)), device=args.device)
    rows = []

    async def go():
        await backend.warmup(8)
        for i, n in enumerate(args.lengths):
            prompt = make_prompts(backend.tokenizer, n, 1)[0] + f" {i}"
            backend._cache.clear()   # the first ask prefills the whole prompt
            for again in (False, True):
                t = time.perf_counter()
                c = await backend.generate(prompt, GenerationParams(max_tokens=2))
                rows.append({"length": c.prompt_tokens, "cached": c.cached_prompt_tokens, "again": again,
                             "ttft_ms": round(1e3 * c.ttft_s, 2), "wall_ms": round(1e3 * (time.perf_counter() - t), 2)})
                print(json.dumps(rows[-1]), flush=True)

    asyncio.run(go())
    return 0


if __name__ == "__main__":
    sys.exit(main())
