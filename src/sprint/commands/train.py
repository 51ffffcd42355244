"""`sprint train`: supervised fine-tuning on SPRINT or sequential records (calls `sprint.train.trainer.run_training`)."""

from __future__ import annotations

import argparse

HELP = "Fine-tune (or train from scratch) a causal LM on curated SPRINT or sequential records."

DESCRIPTION = HELP + """

The run is described by a YAML config (see configs/ and docs/training.md); any value can be overridden on the
command line with dotted keys, typed like the config field they set:

  sprint train --config configs/paper-7b.yaml data.train=runs/curate/train.jsonl training.learning_rate=2e-5

The same command trains the sequential baseline: data.format=sequential keeps only the sequential records.
Loss is on the completion (the assistant text) only; the prompt is the exact text inference continues.
Multi-GPU: launch through accelerate, e.g.
  accelerate launch --config_file configs/accelerate/multi_gpu.yaml --num_processes 8 \\
      -m sprint.cli train --config configs/paper-7b.yaml
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, metavar="FILE.yaml",
                   help="training config (a path, or a preset name looked up as configs/NAME.yaml)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides with dotted keys, e.g. training.max_steps=100")
    p.add_argument("--dry-run", action="store_true",
                   help="build and tokenize the dataset, print length statistics and truncation counts, then exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from sprint.train.trainer import run_training

    result = run_training(args.config, args.overrides, dry=args.dry_run, progress=not args.no_progress)
    if result.output_dir is not None and result.main_process:
        m = result.metrics
        tps = m.get("steady_tokens_per_second") or m.get("train_tokens_per_second")
        print(f"model saved to {result.output_dir} ({m['global_step']} steps, {m['num_input_tokens_seen']} tokens"
              + (f", {tps:,.0f} tokens/s" if tps else "") + ")")
    return 0
