"""Wall-clock of two Countdown eval runs on the problems both finished: the issue's latency target (SPRINT's mean
wall-clock per problem <= 0.6 x the sequential model's, one problem at a time on a GPU).

    python benchmarks/countdown_gpu/latency_table.py SPRINT_RUN SEQUENTIAL_RUN [--name NAME]

Each run is a results file (`results.jsonl`, or the `.jsonl.gz` copies `eval.sh` packs) or a run folder holding
`results.jsonl`. One row: problems both finished, solved by each, mean wall-clock per problem and their ratio, mean
sequential tokens and their ratio, milliseconds per sequential token and their ratio (how much dearer a SPRINT token
is: the stages' prefills, several streams), and the wall-clock ratio on the third of the problems where the sequential
run is longest. Ratios are of means over the same problems. Runs timed one problem at a time (`--concurrency 1`,
`eval.sh latency`) are the ones this is for; with many problems in flight a problem's wall-clock includes waiting.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from sprint.eval.runner import ResultLog

HEADER = ("| runs | problems in both | solved (SPRINT / sequential) | mean wall-clock s (SPRINT / sequential) | "
          "wall-clock ratio | sequential tokens ratio | ms per sequential token (SPRINT / sequential, ratio) | "
          "wall-clock ratio, sequential's longest third |\n|---|---|---|---|---|---|---|---|")


def read_results(path: Path) -> dict[str, dict]:
    """Complete, error-free records by id (the first of each id, as a resumed run keeps)."""
    if path.is_dir():
        path = path / "results.jsonl"
    out: dict[str, dict] = {}
    for r in ResultLog(path).read():
        if not r.get("error") and r.get("wall_clock_s") is not None and "sequential_tokens" in r:
            out.setdefault(r["id"], r)
    return out


def compare(sprint: dict[str, dict], sequential: dict[str, dict]) -> dict:
    ids = [i for i in sprint if i in sequential]
    if not ids:
        raise ValueError("the two runs have no finished problem in common")
    mean = lambda rs, key, sel: statistics.fmean(rs[i][key] for i in sel)
    longest = sorted(ids, key=lambda i: -sequential[i]["sequential_tokens"])[:max(1, len(ids) // 3)]
    wall_s, wall_q = mean(sprint, "wall_clock_s", ids), mean(sequential, "wall_clock_s", ids)
    tok_s, tok_q = mean(sprint, "sequential_tokens", ids), mean(sequential, "sequential_tokens", ids)
    ms_s, ms_q = 1000 * wall_s / tok_s, 1000 * wall_q / tok_q
    return {"n": len(ids), "solved_sprint": sum(bool(sprint[i]["correct"]) for i in ids),
            "solved_sequential": sum(bool(sequential[i]["correct"]) for i in ids),
            "wall_sprint_s": wall_s, "wall_sequential_s": wall_q, "wall_ratio": wall_s / wall_q,
            "token_ratio": tok_s / tok_q, "ms_per_token_sprint": ms_s, "ms_per_token_sequential": ms_q,
            "ms_per_token_ratio": ms_s / ms_q, "longest_third": len(longest),
            "wall_ratio_longest_third": mean(sprint, "wall_clock_s", longest) / mean(sequential, "wall_clock_s", longest)}


def table_row(name: str, c: dict) -> str:
    return (f"| {name} | {c['n']} | {c['solved_sprint']} / {c['solved_sequential']} | {c['wall_sprint_s']:.2f} / "
            f"{c['wall_sequential_s']:.2f} | **{c['wall_ratio']:.2f}** | {c['token_ratio']:.2f} | "
            f"{c['ms_per_token_sprint']:.2f} / {c['ms_per_token_sequential']:.2f} ({c['ms_per_token_ratio']:.2f}x) | "
            f"{c['wall_ratio_longest_third']:.2f} ({c['longest_third']} problems) |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sprint", type=Path, help="the SPRINT run (results file or run folder)")
    ap.add_argument("sequential", type=Path, help="the sequential run")
    ap.add_argument("--name", help="row label (default: the two file names)")
    ap.add_argument("--json", action="store_true", help="print the numbers as JSON instead")
    args = ap.parse_args(argv)
    c = compare(read_results(args.sprint), read_results(args.sequential))
    if args.json:
        print(json.dumps(c, indent=1))
    else:
        print(HEADER)
        print(table_row(args.name or f"{args.sprint.name} vs {args.sequential.name}", c))
    return 0


if __name__ == "__main__":
    sys.exit(main())
