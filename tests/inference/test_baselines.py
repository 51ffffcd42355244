"""Baselines on the scripted backend: sequential, self-consistency (real math-verify equivalence), skeleton-of-thought."""

from __future__ import annotations

import asyncio

from sprint.backends.base import ScriptedBackend
from sprint.format import parse, parse_sequential
from sprint.inference.baselines import (BaselineConfig, majority_answer, skeleton_points, solve_self_consistency,
                                        solve_sequential, solve_skeleton_of_thought)

Q = "What is 1/2 + 0?"


def test_sequential_one_generation_in_the_sequential_layout():
    backend = ScriptedBackend(["Half plus zero is half.\n</think>\n\nSo \\boxed{\\frac{1}{2}}."])
    r = asyncio.run(solve_sequential(Q, backend, BaselineConfig(max_tokens=50)))
    prompt, params = backend.calls[0]
    assert prompt == "<Question>\nWhat is 1/2 + 0?\n</Question>\n\n<think>\n"
    assert params.max_tokens == 50 and params.stop == []
    assert r.method == "sequential" and r.answer == "\\frac{1}{2}"
    trace = parse_sequential(r.trajectory)
    assert trace.thinking == "Half plus zero is half." and trace.question == Q
    assert r.sequential_tokens == r.total_tokens == r.critical_path_tokens - 1  # the tag is generated, not counted
    assert [c.role for c in r.calls] == ["sequential"]


def test_self_consistency_majority_under_math_equivalence():
    outs = ["a \\boxed{0.5}", "b \\boxed{3}", "c \\boxed{\\frac{1}{2}}", "d no answer", "e \\boxed{3}",
            "f \\boxed{1/2}"]
    backend = ScriptedBackend(lambda p: outs.pop(0), delay_s=0.01)
    r = asyncio.run(solve_self_consistency(Q, backend, BaselineConfig(samples=6, temperature=0.8, seed=5)))
    assert r.answer == "0.5" and r.meta["votes"] == 3 and r.meta["shown_sample"] == 1
    assert [s["group"] for s in r.meta["samples"]] == [0, 1, 0, -1, 1, 0]
    assert sorted(p.seed for _, p in backend.calls) == [5, 6, 7, 8, 9, 10]
    assert {c.prompt_id for c in r.calls} == {str(k) for k in range(1, 7)}
    # Parallel samples: latency is the longest sample, cost is the sum.
    longest = max(s["tokens"] for s in r.meta["samples"])
    assert r.sequential_tokens == longest < r.total_tokens == sum(s["tokens"] for s in r.meta["samples"])


def test_majority_ties_go_to_first_group_and_no_answers():
    async def same(a, b):
        return a == b

    assert asyncio.run(majority_answer(["x", "y", "y", "x"], same)) == (0, [0, 1, 1, 0])
    assert asyncio.run(majority_answer([None, None], same)) == (None, [-1, -1])


def test_skeleton_of_thought_skeleton_points_in_parallel_then_answer():
    def model(prompt):
        if prompt.endswith("Outline:\n1."):
            return " Write 1/2 as a decimal.\n2. Add zero.\n3) Check."
        if prompt.endswith("Final answer:"):
            return " \\boxed{0.5}"
        k = prompt.rstrip(".").rsplit("\n", 1)[-1]
        return f" result of point {k}"

    backend = ScriptedBackend(model, delay_s=lambda p: 0.2 if p.endswith("\n1.") and "Outline:\n1. " in p else 0.01)
    r = asyncio.run(solve_skeleton_of_thought(Q, backend, BaselineConfig(max_points=5)))
    assert [c.role for c in r.calls] == ["skeleton", "point", "point", "point", "answer"]
    points = [c for c in r.calls if c.role == "point"]
    assert max(c.start_s for c in points) < min(c.end_s for c in points)  # expanded side by side
    traj = parse(r.trajectory)
    assert [p.text for p in traj.prompts] == ["Write 1/2 as a decimal.", "Add zero.", "Check."]
    assert [e.text for e in traj.stages[0].executions] == ["result of point 1", "result of point 2",
                                                           "result of point 3"]
    assert r.answer == "0.5" and r.method == "skeleton-of-thought"
    answer_prompt = backend.calls[-1][0]
    assert "1. result of point 1" in answer_prompt and "3. result of point 3" in answer_prompt


def test_skeleton_points_parsing():
    assert skeleton_points("1. a\n2) b\n  3 . c\nnot a point", 2) == ["a", "b"]
    assert skeleton_points("- x\n- y", 8) == ["x", "y"]
    assert skeleton_points("   ", 8) == []


def test_baseline_budget_and_failures_do_not_crash():
    slow = ScriptedBackend(["word " * 1000], delay_s=5.0)
    r = asyncio.run(solve_sequential(Q, slow, BaselineConfig(wall_clock_s=0.3)))
    assert r.repairs[-1]["kind"] == "wall_clock_budget" and r.wall_clock_s < 1.5
    assert r.calls[0].error == "cancelled"
    broken = ScriptedBackend(["x"], fail=lambda p: True)
    r = asyncio.run(solve_skeleton_of_thought(Q, broken, BaselineConfig()))
    assert [x["kind"] for x in r.repairs] == ["call_failed"] and r.answer is None
