"""`benchmarks/countdown_stage_layout.py`: a stage's critical path under prompt orders (synthetic stages), and the
measurement on real traces with the bundled tokenizer."""

from __future__ import annotations

from pathlib import Path

from sprint.format.metrics import StageCost

REPO = Path(__file__).resolve().parents[2]


def test_orders_move_the_longest_execution(load_benchmark):
    mod = load_benchmark("benchmarks/countdown_stage_layout.py")
    # Prompts ready at 10, 20, 30 planner tokens; the plan ends at 35.
    stage = StageCost(1, [10, 10, 10, 5], [5, 5, 50])
    out = mod.orders([stage], extra=7)
    assert out == {"as written": 7 + 30 + 50, "longest first": 7 + max(10 + 50, 20 + 5, 30 + 5),
                   "shortest first": 7 + 30 + 50}
    assert mod.orders([StageCost(1, [10, 10, 10, 5], [50, 5, 5])], 0)["as written"] == 60


def test_measure_on_real_traces(load_benchmark, capsys):
    mod = load_benchmark("benchmarks/countdown_stage_layout.py")
    out = mod.measure(str(REPO / "configs" / "countdown-data.yaml"), 6, 1, "countdown-sprint")
    assert 1 <= out["problems"] <= 6
    best, written, worst = (out[k]["tokens"] for k in ("longest first", "as written", "shortest first"))
    assert best <= written <= worst
    assert 0 < out["as written"]["ratio"] < 1   # SPRINT traces are shorter on the critical path
    assert mod.main(["--config", str(REPO / "configs" / "countdown-data.yaml"), "--n", "3"]) == 0
    assert '"longest first"' in capsys.readouterr().out
    assert mod.main(["--config", "/nonexistent.yaml", "--n", "3"]) == 2


def test_split_parts_restate_the_state_line(load_benchmark):
    mod = load_benchmark("benchmarks/countdown_stage_layout.py")
    text = "[160 33 9]\na\nb\nc\nDead end\n"
    assert mod.split_parts(text, 2) == ["[160 33 9]\na\nb", "[160 33 9]\nc\nDead end"]
    assert mod.split_parts("[1 2 3]\nx", 3) == ["[1 2 3]\nx"]   # fewer lines than parts
    assert mod.split_parts("[1 2 3]", 2) == ["[1 2 3]"]


def test_split_latency_puts_each_part_behind_its_own_prompt(load_benchmark):
    mod = load_benchmark("benchmarks/countdown_stage_layout.py")
    from types import SimpleNamespace as NS

    # One stage, two branches of 4 lines after the state; a whitespace counter: each line one token.
    executions = [NS(text="s\n1\n2\n3\n4"), NS(text="s\n1\n2\n3\n4")]
    prompts = [NS(text="Explore a b c d e f"), NS(text="Explore a b c d e f")]   # 7 tokens each
    trajectory = NS(stages=[NS(executions=executions, plan=NS(prompts=prompts))])
    cost = StageCost(1, [10, 10, 5], [5, 5])

    def counter(texts):
        return [len(t.split()) for t in texts]

    # Parts of 3 tokens (state + 2 lines) behind prompts ready at 11, 11 + 8, 19 + 11, 30 + 8 = 38; the plan ends
    # at 43.
    assert mod.split_latency(trajectory, [cost], counter, 2) == max(43, 38 + 3)
    no_exec = NS(stages=[NS(executions=[], plan=NS(prompts=[]))])
    assert mod.split_latency(no_exec, [StageCost(1, [7], [])], counter, 2) == 7
