"""A full batch with requests waiting: blocks of greedy decode steps or one step at a time
(`transformers_backend.FULL_BATCH_BLOCKS`; `--switch split_blocks`: blocks also in passes where a prompt joins,
`SPLIT_BLOCKS`), with the model replaced by a modelled step cost (a GIL-free sleep per
step, as a CUDA-graph replay waits) and scripted tokens, so the real scheduler, detokenizer, stop scanning and queues
do their work on any machine.

Why: with 64 Countdown problems in flight a SPRINT run keeps the in-process backend's 128-row batch full, and the
backend took one step per pass then (a slot a request frees goes to a waiting one at once), paying the host's
per-pass work for every token; the sequential model's 64 streams never fill it and get blocks of `decode_steps`.
This is the host side of that trade; a GPU measured the whole (`benchmarks/countdown_gpu/flag_ab.py --concurrency`:
0.70x the run's time with blocks, which are now the default; BENCHMARKS.md).

Reported per setting: the wall-clock of `--streams` requests of different lengths through a `--max-batch` batch, the
passes, and the modelled device time (steps x `--step-ms`); the settings alternate `--repeats` times.

    python benchmarks/bench_full_batch.py [--streams 48] [--max-batch 16] [--step-ms 1 3] [--decode-steps 8]
        [--switch full_batch_blocks|split_blocks]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scheduler import TEXT, ModelledGraphs, run_streams  # noqa: E402

from sprint.backends import transformers_backend as tb  # noqa: E402
from sprint.models import resolve_model  # noqa: E402


def make_backend(max_batch: int, step_s: float, decode_steps: int, model: str = "countdown-sprint"):
    """The bundled model's tokenizer and scheduler, its passes modelled (`ModelledGraphs`): `step_s` per step, the
    script's next tokens; blocks of `decode_steps` as the backend's rule allows them."""
    backend = tb.TransformersBackend(resolve_model(model), device="cpu", exact=False, max_batch=max_batch)
    backend.eos_ids = set()
    script = backend.tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    backend._graphs = ModelledGraphs(
        lambda rows, steps: step_s * steps,
        lambda req, k: script[(len(req.tokens) - len(req.prompt_ids) + k) % len(script)], max_batch)
    backend.decode_steps = decode_steps
    return backend


#: The switches this compares (`--switch`), each a constant of `transformers_backend`.
SWITCHES = {"full_batch_blocks": "FULL_BATCH_BLOCKS", "split_blocks": "SPLIT_BLOCKS"}


def measure(switch: str, on: bool, streams: int, max_batch: int, step_ms: float, decode_steps: int,
            tokens: int) -> dict:
    name = SWITCHES[switch]
    saved = getattr(tb, name)
    setattr(tb, name, on)
    try:
        backend = make_backend(max_batch, step_ms / 1000, decode_steps)
        before = backend.stats.forward_passes
        # Lengths spread over tokens/2 .. 3 x tokens/2.
        wall, _ = asyncio.run(run_streams(backend, streams, tokens, lambda i: tokens // 2 + (i * 37) % (tokens + 1)))
        return {"wall_s": wall, "passes": backend.stats.forward_passes - before, "device_s": backend._graphs.device_s}
    finally:
        setattr(tb, name, saved)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=48)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--step-ms", type=float, nargs="+", default=[1.0, 3.0], help="modelled device time per step")
    ap.add_argument("--decode-steps", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=160, help="mean tokens per request")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--switch", choices=sorted(SWITCHES), default="full_batch_blocks",
                    help="the switch compared off and on (the other keeps its default)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    rows = []
    for step_ms in args.step_ms:
        runs: dict[bool, list[dict]] = {False: [], True: []}
        for i in range(args.repeats):
            for on in ((False, True) if i % 2 == 0 else (True, False)):
                runs[on].append(measure(args.switch, on, args.streams, args.max_batch, step_ms, args.decode_steps,
                                        args.tokens))
        for on, rs in runs.items():
            row = {args.switch: on, "step_ms": step_ms, "streams": args.streams, "max_batch": args.max_batch,
                   "decode_steps": args.decode_steps, "wall_s": round(statistics.median(r["wall_s"] for r in rs), 3),
                   "passes": rs[0]["passes"], "device_s": round(rs[0]["device_s"], 3),
                   "runs_wall_s": [round(r["wall_s"], 3) for r in rs]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"rows": rows, "argv": sys.argv[1:]}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
