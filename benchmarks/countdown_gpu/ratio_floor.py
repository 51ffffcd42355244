"""How low the SPRINT / sequential wall-clock ratio can go on this engine, from `trace_steps.py` outputs.

`latency_table.py` gives the ratio; `trace_steps.py` gives, per solve, every forward pass (its kind, rows and time)
and the host time between passes. This script pools the traces of several runs (each model's solves weighted by
their number) and takes the ratio apart, each line removing one cost from both models:

  1. `wall`: the traced wall-clock ratio (tracing adds a little host time to both);
  2. `passes`: the forward passes alone, no host time between them;
  3. `device`: also without each pass's host work before its launch (`launch_ms_per_pass`);
  4. `one-row cost`: also with every SPRINT decode pass costing what the sequential model's one-row pass costs: what
     is left is the number of passes, which the model sets (its critical path), not the engine.

A line at or above the target says that no engine work on the costs below it reaches the target alone.

    python benchmarks/trace_steps.py --device cuda --n 100 --seed 1 > sprint_s1.txt
    python benchmarks/trace_steps.py --device cuda --n 100 --seed 1 --model countdown-sequential \
        --method sequential > seq_s1.txt
    python benchmarks/countdown_gpu/ratio_floor.py --sprint sprint_s*.txt --sequential seq_s*.txt
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

DECODE = "decode x"


def read_summary(text: str, where: str = "trace") -> dict:
    """The summary object of a `trace_steps.py` output (the first JSON object with "solves"), wherever it starts:
    the output also holds progress lines, the settings line and, optionally, a profile."""
    decoder = json.JSONDecoder()
    i = text.find("{")
    while i >= 0:
        try:
            obj, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            end = i + 1
        else:
            if isinstance(obj, dict) and "solves" in obj and "kinds" in obj:
                return obj
        i = text.find("{", end)
    raise ValueError(f"{where}: no trace_steps summary (a JSON object with 'solves' and 'kinds') found")


@dataclass
class Pooled:
    """Per-solve means over several traces of one model."""
    solves: int
    wall_ms: float
    between_ms: float
    pass_ms: float       # all forward passes (each pass's own host work before its launch included)
    launch_ms: float     # of it: the host work before each launch
    decode_passes: float
    decode_ms: float     # the decode passes' time (launch included)
    decode_launch_ms: float

    @property
    def decode_ms_per_pass(self) -> float:
        return self.decode_ms / self.decode_passes if self.decode_passes else 0.0

    @property
    def decode_device_ms_per_pass(self) -> float:
        """A decode pass without its host work before the launch."""
        return (self.decode_ms - self.decode_launch_ms) / self.decode_passes if self.decode_passes else 0.0


def pool(summaries: list[dict]) -> Pooled:
    """Per-solve means over traces, each weighted by its solves."""
    if not summaries:
        raise ValueError("no traces given")
    n = wall = between = passes = launch = dpasses = dms = dlaunch = 0.0
    for s in summaries:
        k = s["solves"]
        if k <= 0:
            raise ValueError(f"a trace with solves={k}")
        n += k
        wall += s["wall_ms_per_solve"] * k
        between += s["between_ms_per_solve"] * k
        for kind, v in s["kinds"].items():
            passes += v["ms_per_solve"] * k
            launch += v["launch_ms_per_pass"] * v["passes_per_solve"] * k
            if kind.startswith(DECODE):
                dpasses += v["passes_per_solve"] * k
                dms += v["ms_per_solve"] * k
                dlaunch += v["launch_ms_per_pass"] * v["passes_per_solve"] * k
    return Pooled(int(n), wall / n, between / n, passes / n, launch / n, dpasses / n, dms / n, dlaunch / n)


def floor_lines(sprint: Pooled, sequential: Pooled) -> list[tuple[str, float]]:
    """(what is left, SPRINT / sequential) for each line of the module doc."""
    seq_device = sequential.pass_ms - sequential.launch_ms
    # The one-row line: SPRINT's decode passes at the sequential model's device cost per decode pass.
    extra = sprint.decode_device_ms_per_pass - sequential.decode_device_ms_per_pass
    one_row = sprint.pass_ms - sprint.launch_ms - sprint.decode_passes * extra
    return [("wall", sprint.wall_ms / sequential.wall_ms),
            ("passes", sprint.pass_ms / sequential.pass_ms),
            ("device", (sprint.pass_ms - sprint.launch_ms) / seq_device),
            ("one-row cost", one_row / seq_device)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sprint", nargs="+", type=Path, required=True, help="trace_steps.py outputs of the SPRINT model")
    ap.add_argument("--sequential", nargs="+", type=Path, required=True,
                    help="trace_steps.py outputs of the sequential model")
    args = ap.parse_args(argv)
    try:
        a = pool([read_summary(p.read_text(), str(p)) for p in args.sprint])
        b = pool([read_summary(p.read_text(), str(p)) for p in args.sequential])
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"| | SPRINT | sequential |\n|---|---|---|\n| solves | {a.solves} | {b.solves} |\n"
          f"| wall ms per solve | {a.wall_ms:.1f} | {b.wall_ms:.1f} |\n"
          f"| host between passes, ms | {a.between_ms:.1f} | {b.between_ms:.1f} |\n"
          f"| forward passes, ms (host before launch) | {a.pass_ms:.1f} ({a.launch_ms:.1f}) | "
          f"{b.pass_ms:.1f} ({b.launch_ms:.1f}) |\n"
          f"| decode passes, ms each | {a.decode_passes:.1f}, {a.decode_ms_per_pass:.3f} | "
          f"{b.decode_passes:.1f}, {b.decode_ms_per_pass:.3f} |\n")
    print("| ratio left when removing | SPRINT / sequential |\n|---|---|")
    for name, ratio in floor_lines(a, b):
        print(f"| {name} | {ratio:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
