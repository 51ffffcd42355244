"""Wall-clock of one `sprint eval` command with the CPU fast mode's decode attention in runs of G slots (each run up
to its own longest sequence; `sprint.backends.transformers_backend.SLOT_GROUP`), for each G given; 0 = one call over
every slot up to the longest (the behaviour before runs, and the GPU's).

    python benchmarks/bench_slot_groups.py --groups 4 0 -- eval --task countdown --n 16 --seed 1 --concurrency 16 \\
        --model countdown-sprint --method sprint --backend-mode fast --max-batch 64 --out /tmp/slot_groups

Each G runs in a fresh process, one after another, into its own run folder (`--out` + `_G`), so nothing resumes.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time

CHILD = """
import sys
from sprint.backends import transformers_backend as tb
g = int(sys.argv[1])
tb.SLOT_GROUP = g if g > 0 else 10**9
from sprint.cli import main
sys.exit(main(sys.argv[2:]))
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--groups", nargs="+", type=int, default=[4, 0], help="slots per run (0: one call, no runs)")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then a `sprint` command line (eval ... --out DIR)")
    args = ap.parse_args()
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if "--out" not in cmd:
        raise SystemExit("the sprint command needs --out RUN_DIR")
    k = cmd.index("--out") + 1
    rows = []
    for g in args.groups:
        run = list(cmd)
        run[k] = f"{cmd[k]}_{g}"
        shutil.rmtree(run[k], ignore_errors=True)
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", CHILD, str(g), *run], capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"G={g} failed:\n{proc.stderr[-2000:]}")
        table = [line for line in proc.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
        rows.append((g, wall, table))
    for g, wall, table in rows:
        print(f"G={g or 'off'}: {wall:.1f} s")
        for line in table:
            print("   ", line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
