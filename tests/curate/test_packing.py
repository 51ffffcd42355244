"""Packing: the stage rule, width caps, folding, DAG checks and the rendered trajectory."""

import pytest

from sprint.curate.packing import DagError, Step, check_dag, fold_short_executions, pack, to_trajectory
from sprint.format import parse, render


def ex(i, lines=(1, 5)):
    return Step(i, f"d{i}", f"plan {i}", f"do {i}", f"result {i}", execution_lines=lines)


def po(i):
    return Step(i, f"d{i}", f"plan {i}")


def test_stage_rule_plan_only_parent_does_not_push():
    steps = [po(1), ex(2), ex(3), po(4), ex(5)]
    parents = {1: [], 2: [1], 3: [1], 4: [2], 5: [4]}
    p = pack(steps, parents)
    assert p.stages == {1: 1, 2: 1, 3: 1, 4: 2, 5: 2}
    assert p.executed == 3 and p.num_stages == 2 and p.ratio == 1.5 and p.kept and p.reason is None


def test_stage_is_max_over_parents():
    steps = [ex(1), ex(2), ex(3), ex(4)]
    p = pack(steps, {1: [], 2: [1], 3: [2], 4: [1, 3]})
    assert p.stages == {1: 1, 2: 2, 3: 3, 4: 4}
    assert not p.kept and p.reason.startswith("low_ratio")


def test_width_caps_prompts_and_keeps_dependencies():
    steps = [ex(1), ex(2), ex(3), ex(4), ex(5), po(6), ex(7)]
    parents = {1: [], 2: [], 3: [], 4: [], 5: [1], 6: [3], 7: [6]}
    free = pack(steps, parents)
    assert free.stages == {1: 1, 2: 1, 3: 1, 4: 1, 5: 2, 6: 2, 7: 2}
    w2 = pack(steps, parents, width=2)
    # 3 and 4 overflow to stage 2; 5 (child of 1) fits in 2 only if room: stage 2 holds 3, 4 -> 5 goes to 3.
    assert w2.stages == {1: 1, 2: 1, 3: 2, 4: 2, 5: 3, 6: 3, 7: 3}
    for sid, ps in parents.items():
        for q in ps:
            by = {s.id: s for s in steps}
            assert w2.stages[sid] >= w2.stages[q] + (1 if by[q].has_execution else 0)
    per_stage = {}
    for s in steps:
        if s.has_execution:
            per_stage[w2.stages[s.id]] = per_stage.get(w2.stages[s.id], 0) + 1
    assert max(per_stage.values()) <= 2
    assert pack(steps, parents, width=1).num_stages == 6
    with pytest.raises(ValueError, match="width"):
        pack(steps, parents, width=0)


def test_filters_max_stages_and_min_ratio():
    chain = [ex(i) for i in range(1, 14)]
    parents = {i: ([] if i == 1 else [i - 1]) for i in range(1, 14)}
    p = pack(chain, parents, min_ratio=0.5)
    assert p.reason == "too_many_stages: 13 > 11" and not p.kept
    assert pack(chain, parents, min_ratio=0.5, max_stages=13).kept
    assert pack([], {}).reason.startswith("no_steps")


def test_fold_threshold_follows_released_code():
    steps = [ex(1, (4, 6)), ex(2, (10, 13)), Step(3, "", "", "p", "only exec", execution_lines=(20, 20))]
    folded = fold_short_executions(steps)  # 6 - 4 = 2 < 3 folds; 13 - 10 = 3 does not
    assert [s.has_execution for s in folded] == [False, True, False]
    assert folded[0].plan == "plan 1\nresult 1"
    assert folded[2].plan == "only exec"  # no plan: the execution becomes the plan
    assert [s.has_execution for s in fold_short_executions(steps, 0)] == [True, True, True]
    assert [s.has_execution for s in fold_short_executions(steps, 4)] == [False, False, False]


@pytest.mark.parametrize("parents,msg", [
    ({1: [], 2: [3], 3: [2]}, "cycle: 2 -> 3 -> 2"),
    ({1: [], 2: [1], 3: [9]}, "step 3 has unknown parent 9"),
    ({1: [], 2: [1]}, "step 3 has no entry"),
    ({1: [], 2: [1], 3: [1], 4: []}, "unknown step 4"),
    ({1: [1], 2: [], 3: []}, "step 1 lists itself"),
])
def test_dag_errors(parents, msg):
    with pytest.raises(DagError, match=msg):
        check_dag([1, 2, 3], parents)
    with pytest.raises(DagError):
        pack([ex(1), ex(2), ex(3)], parents)


def test_parents_earlier_is_optional():
    check_dag([1, 2], {1: [2], 2: []}, parents_earlier=False)
    with pytest.raises(DagError, match="comes later"):
        check_dag([1, 2], {1: [2], 2: []})


def test_to_trajectory_separators_based_on_and_numbering():
    steps = [ex(1), ex(2), po(3), ex(4), po(5), ex(6)]
    parents = {1: [], 2: [], 3: [1], 4: [1], 5: [1, 2], 6: [1]}
    p = pack(steps, parents)
    assert p.stages == {1: 1, 2: 1, 3: 2, 4: 2, 5: 2, 6: 2}
    traj = to_trajectory("Q?", steps, p, "So \\boxed{1}.", think=False)
    text = render(traj)
    back = parse(text)
    assert back.ok and render(back) == text
    plan2 = traj.stages[1].plan.text
    # 3 and 4 name the same executions: one "Based on" line; 5 names two; 6 goes back to 1.1 alone.
    assert plan2.count("Based on execution_1.1:") == 2
    assert "Based on execution_1.1, execution_1.2:" in plan2
    assert "-----" not in plan2  # 3, 4, 5, 6 are neighbours in the trace
    assert [e.id for e in traj.stages[1].executions] == ["2.1", "2.2"]
    assert [e.text for e in traj.stages[1].executions] == ["result 4", "result 6"]
    # Stage 1 holds 1 and 2 (neighbours); a gap in the trace gives a separator:
    p2 = pack([ex(1), ex(2), ex(3)], {1: [], 2: [1], 3: []})
    t2 = render(to_trajectory("Q", [ex(1), ex(2), ex(3)], p2, "A", think=False))
    assert "</prompt_1.1>\n-----\n\nplan 3" in t2


def test_comments_are_kept_or_dropped():
    steps = [Step(1, "", "plan 1", "do 1", "result 1", "looks right", execution_lines=(2, 9)),
             Step(2, "", "plan 2", comment="noted")]
    p = pack(steps, {1: [], 2: []}, min_ratio=0)
    kept = render(to_trajectory("Q", steps, p, "A", think=False))
    assert "result 1\nlooks right\n</execution_1.1>" in kept and "plan 2\nnoted" in kept
    dropped = render(to_trajectory("Q", steps, p, "A", think=False, comments=False))
    assert "looks right" not in dropped and "noted" not in dropped


def test_folded_steps_lose_their_prompt_and_empty_plans_render_cleanly():
    folded = fold_short_executions([ex(1, (3, 4))])
    assert folded[0].prompt is None and folded[0].execution is None and folded[0].execution_lines is None
    steps = [ex(1), Step(2, "", "", "do 2", "result 2", execution_lines=(8, 12)), ex(3)]
    p = pack(steps, {1: [], 2: [1], 3: [1]})
    text = render(to_trajectory("Q", steps, p, "A", think=False))
    assert "<Plan_2>\nBased on execution_1.1:\n<prompt_2.1> do 2 </prompt_2.1>\n\nplan 3\n\n<prompt_2.2>" in text
    assert "\n\n\n" not in text and parse(text).ok
