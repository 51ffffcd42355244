"""Wall-clock of two Countdown eval runs on the problems both finished: the issue's latency target (SPRINT's mean
wall-clock per problem <= 0.6 x the sequential model's, one problem at a time on a GPU).

    python benchmarks/countdown_gpu/latency_table.py SPRINT_RUN SEQUENTIAL_RUN [SPRINT_RUN2 SEQUENTIAL_RUN2 ...]
        [--name NAME] [--json]

Several pairs (e.g. two seeds) are pooled into one row: problems are keyed by pair and id. Each run is a results file
(`results.jsonl`, or the `.jsonl.gz` copies `eval.sh` packs) or a run folder holding `results.jsonl`. One row: problems
both finished, solved by each, mean wall-clock per problem and their ratio, mean sequential tokens and their ratio,
milliseconds per sequential token and their ratio (how much dearer a SPRINT token is: the stages' prefills, several
streams), and the wall-clock ratio on the third of the problems where the sequential run is longest. Ratios are of means
over the same problems; the wall-clock ratio carries a 95% interval from a paired bootstrap over problems (2,000
resamples, fixed seed), since a target like <= 0.6x can sit inside the noise. Runs timed one problem at a time
(`--concurrency 1`, `eval.sh latency`) are the ones this is for; with many problems in flight a problem's wall-clock
includes waiting.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

from sprint.eval.runner import ResultLog

HEADER = ("| runs | problems in both | solved (SPRINT / sequential) | mean wall-clock s (SPRINT / sequential) | "
          "wall-clock ratio (95% CI) | sequential tokens ratio | "
          "ms per sequential token (SPRINT / sequential, ratio) | wall-clock ratio, sequential's longest third |\n|---|---|---|---|---|---|---|---|")


def read_results(path: Path) -> dict[str, dict]:
    """Complete, error-free records by id (the first of each id, as a resumed run keeps)."""
    if path.is_dir():
        path = path / "results.jsonl"
    out: dict[str, dict] = {}
    for r in ResultLog(path).read():
        if not r.get("error") and r.get("wall_clock_s") is not None and "sequential_tokens" in r:
            out.setdefault(r["id"], r)
    return out


def bootstrap_ratio(num: list[float], den: list[float], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of sum(num)/sum(den) when the (num, den) pairs are resampled together."""
    rng, n = random.Random(seed), len(num)
    ratios = []
    for _ in range(resamples):
        pick = [rng.randrange(n) for _ in range(n)]
        ratios.append(sum(num[k] for k in pick) / sum(den[k] for k in pick))
    ratios.sort()
    return ratios[int(0.025 * resamples)], ratios[int(0.975 * resamples) - 1]


def compare(sprint: dict[str, dict], sequential: dict[str, dict]) -> dict:
    ids = [i for i in sprint if i in sequential]
    if not ids:
        raise ValueError("the two runs have no finished problem in common")
    lo, hi = bootstrap_ratio([sprint[i]["wall_clock_s"] for i in ids], [sequential[i]["wall_clock_s"] for i in ids])
    mean = lambda rs, key, sel: statistics.fmean(rs[i][key] for i in sel)
    longest = sorted(ids, key=lambda i: -sequential[i]["sequential_tokens"])[:max(1, len(ids) // 3)]
    wall_s, wall_q = mean(sprint, "wall_clock_s", ids), mean(sequential, "wall_clock_s", ids)
    tok_s, tok_q = mean(sprint, "sequential_tokens", ids), mean(sequential, "sequential_tokens", ids)
    ms_s, ms_q = 1000 * wall_s / tok_s, 1000 * wall_q / tok_q
    return {"n": len(ids), "solved_sprint": sum(bool(sprint[i]["correct"]) for i in ids),
            "solved_sequential": sum(bool(sequential[i]["correct"]) for i in ids),
            "wall_sprint_s": wall_s, "wall_sequential_s": wall_q, "wall_ratio": wall_s / wall_q,
            "wall_ratio_ci95": [lo, hi],
            "token_ratio": tok_s / tok_q, "ms_per_token_sprint": ms_s, "ms_per_token_sequential": ms_q,
            "ms_per_token_ratio": ms_s / ms_q, "longest_third": len(longest),
            "wall_ratio_longest_third":
                mean(sprint, "wall_clock_s", longest) / mean(sequential, "wall_clock_s", longest)}


def table_row(name: str, c: dict) -> str:
    return (f"| {name} | {c['n']} | {c['solved_sprint']} / {c['solved_sequential']} | {c['wall_sprint_s']:.2f} / "
            f"{c['wall_sequential_s']:.2f} | **{c['wall_ratio']:.2f}** [{c['wall_ratio_ci95'][0]:.2f}, "
            f"{c['wall_ratio_ci95'][1]:.2f}] | {c['token_ratio']:.2f} | "
            f"{c['ms_per_token_sprint']:.2f} / {c['ms_per_token_sequential']:.2f} ({c['ms_per_token_ratio']:.2f}x) | "
            f"{c['wall_ratio_longest_third']:.2f} ({c['longest_third']} problems) |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+", metavar="RUN",
                    help="SPRINT run, sequential run (results files or run folders); more pairs are pooled")
    ap.add_argument("--name", help="row label (default: each pair's two file names)")
    ap.add_argument("--json", action="store_true", help="print the numbers as JSON instead")
    args = ap.parse_args(argv)
    if len(args.runs) % 2:
        ap.error(f"runs come in pairs (SPRINT, sequential); got {len(args.runs)}: {[str(r) for r in args.runs]}")
    pairs = list(zip(args.runs[0::2], args.runs[1::2]))
    sprint, sequential = {}, {}
    for k, (s_run, q_run) in enumerate(pairs):  # keyed by pair: two seeds may reuse an id
        sprint.update({(k, i): r for i, r in read_results(s_run).items()})
        sequential.update({(k, i): r for i, r in read_results(q_run).items()})
    c = compare(sprint, sequential)
    if args.json:
        print(json.dumps(c, indent=1))
    else:
        print(HEADER)
        print(table_row(args.name or " + ".join(f"{a.name} vs {b.name}" for a, b in pairs), c))
    return 0


if __name__ == "__main__":
    sys.exit(main())
