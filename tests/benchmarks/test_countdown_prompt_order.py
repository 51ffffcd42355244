"""`benchmarks/countdown_prompt_order.py`: a stage's critical path under prompt orders (synthetic stages), and the
measurement on real traces with the bundled tokenizer."""

from __future__ import annotations

from pathlib import Path

from sprint.format.metrics import StageCost

REPO = Path(__file__).resolve().parents[2]


def test_orders_move_the_longest_execution(load_benchmark):
    mod = load_benchmark("benchmarks/countdown_prompt_order.py")
    # Prompts ready at 10, 20, 30 planner tokens; the plan ends at 35.
    stage = StageCost(1, [10, 10, 10, 5], [5, 5, 50])
    out = mod.orders([stage], extra=7)
    assert out == {"as written": 7 + 30 + 50, "longest first": 7 + max(10 + 50, 20 + 5, 30 + 5),
                   "shortest first": 7 + 30 + 50}
    assert mod.orders([StageCost(1, [10, 10, 10, 5], [50, 5, 5])], 0)["as written"] == 60


def test_measure_on_real_traces(load_benchmark, capsys):
    mod = load_benchmark("benchmarks/countdown_prompt_order.py")
    out = mod.measure(str(REPO / "configs" / "countdown-data.yaml"), 6, 1, "countdown-sprint")
    assert 1 <= out["problems"] <= 6
    best, written, worst = (out[k]["tokens"] for k in ("longest first", "as written", "shortest first"))
    assert best <= written <= worst
    assert 0 < out["as written"]["ratio"] < 1   # SPRINT traces are shorter on the critical path
    assert mod.main(["--config", str(REPO / "configs" / "countdown-data.yaml"), "--n", "3"]) == 0
    assert '"longest first"' in capsys.readouterr().out
    assert mod.main(["--config", "/nonexistent.yaml", "--n", "3"]) == 2
