"""Training throughput (tokens/s) of a `sprint train` preset on whatever device is present.

Runs the real training path (TrainConfig -> sprint.train.data -> TRL SFTTrainer) for a fixed number of optimizer
steps with evaluation and checkpointing off, and reports steady-state non-padding training tokens per second (the
first steps are warm-up and not counted), with the device, model size and batch shape.

Data: the preset's own records by default. `--records reference` uses the real records built offline from
../shared (the paper's released SPRINT samples and R1 sequential traces, repeated to fill the batches) for when the
preset's data does not exist yet; `--tiny-tokenizer` builds a small BPE tokenizer on those records for presets
trained from scratch whose tokenizer is not built yet. Say which data was used when quoting a number.

Examples:
  # the Countdown preset on its data (GPU):
  python benchmarks/bench_train.py --config configs/countdown-small.yaml --steps 60
  # a tiny CPU run on the reference records:
  python benchmarks/bench_train.py --config configs/countdown-small.yaml --records reference --tiny-tokenizer \\
      --steps 8 data.format=sequential training.per_device_train_batch_size=2 \\
      model.architecture.hidden_size=64 model.architecture.num_hidden_layers=2 model.architecture.intermediate_size=128
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _reference_records(out: Path, fmt: str | None, shared: Path, min_records: int) -> Path:
    from sprint.testing.records import r1_sequential_records, reference_sprint_records
    from sprint.train.data import write_records

    records = reference_sprint_records(shared) + r1_sequential_records(shared, 4)
    if fmt:
        records = [r for r in records if r["format"] == fmt]
    # Repeat (with distinct ids) so every step gets a full batch, as it would on a real data set.
    reps = max(1, math.ceil(min_records / len(records)))
    rows = [dict(r, id=f"{r['id']}#{k}") for k in range(reps) for r in records]
    return write_records(rows, out / "records.jsonl")


def _tiny_tokenizer(records: Path, out: Path) -> Path:
    from sprint.testing.tiny import build_tiny_tokenizer

    corpus = [m["content"] for line in records.open(encoding="utf-8") for m in json.loads(line)["messages"]]
    build_tiny_tokenizer(out, corpus=corpus[:200], vocab_size=2048, tags_as_tokens=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    ap.add_argument("--steps", type=int, default=30, help="optimizer steps to run (default 30)")
    ap.add_argument("--warmup-steps", type=int, default=3, help="first steps not timed (default 3)")
    ap.add_argument("--records", choices=["config", "reference"], default="config")
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared", help="../shared (for --records reference)")
    ap.add_argument("--tiny-tokenizer", action="store_true", help="build a small tokenizer on the records")
    ap.add_argument("--json-out", type=Path, help="also write the result as JSON")
    args = ap.parse_args(argv)
    if args.steps <= args.warmup_steps:
        ap.error("--steps must be larger than --warmup-steps")

    import torch

    from sprint.train.config import load_config
    from sprint.train.trainer import ThroughputCallback, build_trainer, resolve_bf16

    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    overrides = list(args.overrides)
    cfg = load_config(args.config, overrides)
    per_step = cfg.training.per_device_train_batch_size * cfg.training.gradient_accumulation_steps
    if args.records == "reference":
        path = _reference_records(tmp, cfg.data.format, args.shared, per_step * args.steps)
        overrides += [f"data.train={path}", "data.eval=null", "data.eval_fraction=0"]
        if args.tiny_tokenizer:
            overrides.append(f"model.tokenizer={_tiny_tokenizer(path, tmp / 'tokenizer')}")
    overrides += [f"training.output_dir={tmp / 'out'}", f"training.max_steps={args.steps}",
                  "training.max_tokens_budget=null", "training.eval_steps=null", "training.logging_steps=1000000",
                  "training.report_to=none", "training.sft.save_strategy=no", "training.sft.eval_strategy=no",
                  "training.load_best_model_at_end=false"]
    cfg = load_config(args.config, overrides)

    throughput = ThroughputCallback(skip_steps=args.warmup_steps)
    trainer, data = build_trainer(cfg, progress=False, callbacks=[throughput])
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    steady = throughput.summary()
    if not steady:
        print("no steady-state steps were timed", file=sys.stderr)
        return 1
    n_params = sum(p.numel() for p in trainer.model.parameters())
    device = (f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}" if torch.cuda.is_available()
              else f"cpu, {torch.get_num_threads()} torch threads")
    result = {
        "config": str(args.config), "overrides": list(args.overrides), "records": args.records,
        "format": cfg.data.format, "device": device, "bf16": resolve_bf16(cfg.training.bf16),
        "parameters": n_params, "samples": len(data.train), "mean_sample_tokens": data.train_stats.mean,
        "per_device_batch": cfg.training.per_device_train_batch_size,
        "gradient_accumulation_steps": cfg.training.gradient_accumulation_steps,
        "processes": trainer.args.world_size, "steps": args.steps, "timed_steps": steady["steady_steps_measured"],
        "timed_tokens": steady["steady_tokens_measured"],
        "tokens_per_second": round(steady["steady_tokens_per_second"], 1),
        "steps_per_second": round(steady["steady_steps_per_second"], 3), "wall_seconds": round(wall, 2),
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available()
        else None,
    }
    print(f"{result['tokens_per_second']:,.0f} training tokens/s ({result['steps_per_second']} steps/s) on "
          f"{device}; {n_params / 1e6:.2f}M parameters, batch {result['per_device_batch']} x "
          f"{result['gradient_accumulation_steps']} x {result['processes']}, mean {result['mean_sample_tokens']:.0f} "
          f"tokens/sample, {result['timed_steps']} timed steps")
    print(json.dumps(result))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
