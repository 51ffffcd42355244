"""`benchmarks/countdown_gpu/ablate_table.py --against`: token ratios and wins against a reference run, on the
problems both runs have (synthetic result files: the script only reads results.jsonl)."""

from __future__ import annotations

import json
from pathlib import Path


def _run(folder: Path, rows) -> Path:
    folder.mkdir(parents=True)
    with open(folder / "results.jsonl", "w") as f:
        for i, (tokens, correct) in enumerate(rows):
            f.write(json.dumps({"id": f"p{i}", "sequential_tokens": tokens, "correct": correct}) + "\n")
    return folder


def test_against_gives_the_ratio_of_means_overall_and_on_the_longest_third(tmp_path, load_benchmark):
    mod = load_benchmark("benchmarks/countdown_gpu/ablate_table.py")
    ref = mod._results(_run(tmp_path / "seq", [(100, True), (200, True), (600, False)]))
    # Problem p3 only here: left out. Longest third of the reference: p2 (600 tokens).
    mine = _run(tmp_path / "sprint", [(50, True), (100, False), (150, True), (999, True)])
    row = mod.against(mine, ref)
    assert row == "| sprint | 3 | 0.33 (100 / 300) | 0.25 (1 problems) | 1 | 1 |"
    assert mod.main([str(mine), "--against"]) == 2
