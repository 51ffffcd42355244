"""`benchmarks/bench_prompt_ids.py`: a recorded solve's prompts are rebuilt as the orchestrator sends them, and both
ways of tokenizing them agree (the script stops on a difference)."""

from __future__ import annotations

import json

from sprint.format import render
from sprint.format.trajectory import Execution, Plan, Prompt, Stage, Trajectory


def _record() -> dict:
    plan = Plan(parts=["[88 83 15 5] 80", Prompt(1, 1, "Explore 88+83=171"), Prompt(1, 2, "Explore 88-83=5")])
    stage = Stage(index=1, plan=plan, execution_block=True,
                  executions=[Execution(1, 1, "[171 15 5]\nDead end"),
                              Execution(1, 2, "[15 5 5]\nSolution (⁸⁸-⁸³)*¹⁵+⁵")])
    traj = Trajectory(question="Using the numbers [88, 83, 15, 5], create an equation that equals 80.",
                      stages=[stage], final_answer="\\boxed{(88-83)*15+5}")
    return {"trajectory": render(traj)}


def test_the_prompts_of_a_solve_in_the_order_they_are_sent(load_benchmark):
    mod = load_benchmark("benchmarks/bench_prompt_ids.py")
    sent = mod.prompts(_record())
    assert [kind for kind, _ in sent] == ["planner", "executor", "executor", "execution"]
    planner, first, second, execution = (text for _, text in sent)
    assert first.startswith(planner) and second.startswith(planner) and "Explore 88-83=5" in second
    assert "Explore 88-83=5" not in first and "Dead end" in execution


def test_both_ways_agree_and_are_reported(load_benchmark, tmp_path, capsys):
    mod = load_benchmark("benchmarks/bench_prompt_ids.py")
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(_record()) + "\n")
    assert mod.main([str(path), "--n", "1"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["way"] for r in rows] == ["whole", "pieces"]
    assert rows[0]["planner"]["calls"] == 1 and rows[1]["execution"]["calls"] == 1
