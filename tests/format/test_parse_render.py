"""Parsing and canonical rendering: round-trips on hand-built and real trajectories, and every diagnostic code."""

from __future__ import annotations

import pytest

from sprint.format import (
    Execution,
    Plan,
    Prompt,
    Stage,
    Trajectory,
    TrajectoryParseError,
    parse,
    parse_plan,
    render,
)
from sprint.format import tags as T


def _stage_1() -> Stage:
    plan = Plan(["First the setup.\n\n", Prompt(1, 1, "Add 2 and 3."), " Meanwhile:\n\n", Prompt(1, 2, "Multiply 4 by 5."),
                 "\n\nBoth are needed."])
    return Stage(1, plan, [Execution(1, 1, "2 + 3 = 5"), Execution(1, 2, "4 * 5 = 20")])


def _stage_2() -> Stage:
    body = (T.based_on_line([(1, 1), (1, 2)]) + "\nCombine them.\n" + T.STEP_SEPARATOR + "\n\n"
            + T.based_on_line([(1, 2)]) + "\n")
    return Stage(2, Plan([body, Prompt(2, 1, "Compute 5 + 20.")]), [Execution(2, 1, "25")])


HAND_BUILT = {
    "two stages": Trajectory("What is (2+3) + 4*5?", [_stage_1(), _stage_2()], "The answer is $\\boxed{25}$."),
    "no think": Trajectory("Q?", [_stage_1()], "\\boxed{5}", think=False),
    "no question": Trajectory(None, [_stage_1()], "\\boxed{5}"),
    "preamble": Trajectory("Q?", [_stage_1()], "\\boxed{5}", preamble="Let me plan this."),
    "preamble without think": Trajectory("Q?", [_stage_1()], "\\boxed{5}", think=False, preamble="Plan first."),
    "preamble then answer": Trajectory("Q?", [], "\\boxed{5}", preamble="It is clearly 5."),
    "thinking only": Trajectory("Q?", [], None, preamble="Still thinking"),
    "plan without prompts": Trajectory("Q?", [Stage(1, Plan(["Just reason here."]), [])], "\\boxed{1}"),
    "plan without execution block": Trajectory("Q?", [Stage(1, Plan(["x"]), [], execution_block=False)], "1"),
    "empty plan": Trajectory("Q?", [Stage(1, Plan(), [])], "1"),
    "prompt-only plan": Trajectory("Q?", [Stage(1, Plan([Prompt(1, 1, "do it")]), [Execution(1, 1, "done")])], "1"),
    "math with < and >": Trajectory(
        "If a<b>c and x < y, is 3 > 2?",
        [Stage(1, Plan(["Since a<b>c and 3 > 2 <3 holds,\n", Prompt(1, 1, "Check 1<2>0.")]),
               [Execution(1, 1, "x<y> is fine; <b> is not a tag.")])],
        "$a<b$ so \\boxed{\\text{yes}}"),
    "empty final answer": Trajectory("Q?", [_stage_1()], ""),
    "missing final answer": Trajectory("Q?", [_stage_1()], None),
    "nothing": Trajectory(),
}


@pytest.mark.parametrize("name", list(HAND_BUILT))
def test_round_trip_hand_built(name):
    text = render(HAND_BUILT[name])
    assert render(parse(text)) == text


def test_parse_recovers_the_structure():
    traj = HAND_BUILT["two stages"]
    got = parse(render(traj))
    assert got.ok
    assert got.question == traj.question
    assert got.final_answer == traj.final_answer
    assert [s.index for s in got.stages] == [1, 2]
    assert [(p.id, p.text) for p in got.prompts] == [("1.1", "Add 2 and 3."), ("1.2", "Multiply 4 by 5."),
                                                     ("2.1", "Compute 5 + 20.")]
    assert [(e.id, e.text) for s in got.stages for e in s.executions] == [("1.1", "2 + 3 = 5"), ("1.2", "4 * 5 = 20"),
                                                                         ("2.1", "25")]
    assert T.parse_based_on(got.stages[1].plan.parts[0].splitlines()[0]) == [(1, 1), (1, 2)]


def test_math_angle_brackets_stay_text():
    got = parse(render(HAND_BUILT["math with < and >"]))
    assert got.ok
    assert got.question == "If a<b>c and x < y, is 3 > 2?"
    assert got.stages[0].plan.parts[0].startswith("Since a<b>c and 3 > 2 <3 holds,")
    assert got.stages[0].prompts[0].text == "Check 1<2>0."
    assert got.stages[0].executions[0].text == "x<y> is fine; <b> is not a tag."
    assert got.final_answer == "$a<b$ so \\boxed{\\text{yes}}"


def test_no_prompt_stage_parses_clean():
    text = render(HAND_BUILT["plan without prompts"])
    assert T.NO_PROMPT_TEXT in text
    got = parse(text)
    assert got.ok and got.stages[0].execution_block and got.stages[0].executions == []


def test_parse_plan_alone():
    plan, diags = parse_plan("Think.\n<prompt_3.1> a </prompt_3.1>\n<prompt_3.2> b </prompt_3.2>\nDone.", 3)
    assert diags == []
    assert [p.text for p in plan.prompts] == ["a", "b"]
    assert [seg for seg, _ in plan.segments()] == ["Think.\n", "\n", "\nDone."]


# ---------------------------------------------------------------------------------------------- real fixtures
def _reference_files(shared_dir):
    ref = shared_dir / "fixtures" / "sprint_reference"
    sprint_files = sorted((ref / "math500_sprint").glob("*.txt"))
    curated = sorted((ref / "curation" / "trajectory_data").glob("*.txt"))
    return sprint_files, curated


def test_round_trip_reference_trajectories(shared_dir):
    sprint_files, curated = _reference_files(shared_dir)
    assert len(sprint_files) == 100 and len(curated) == 3
    not_identical = []
    for path in sprint_files + curated:
        text = path.read_text()
        traj = parse(text)
        if render(traj) != text:
            not_identical.append(path.name)
        assert traj.stages and traj.final_answer, path.name
        assert render(parse(render(traj))) == render(traj), path.name
    assert not_identical == []


def test_reference_diagnostics_are_the_known_ones(shared_dir):
    """Only one released trajectory is off-grammar: its planner opened <execution_3.1> inside Plan_3."""
    sprint_files, curated = _reference_files(shared_dir)
    found = {}
    for path in sprint_files + curated:
        diags = parse(path.read_text()).diagnostics
        if diags:
            found[path.name] = [d.code for d in diags]
    assert found == {"planner_trajectory_test_prealgebra_1787.txt": ["stray_tag"]}


# ---------------------------------------------------------------------------------------------- diagnostics
GOOD = render(Trajectory("What is 2+3?", [Stage(1, Plan(["Add.\n\n", Prompt(1, 1, "Add 2 and 3.")]),
                                               [Execution(1, 1, "2+3=5")])], "\\boxed{5}"))


def _codes(text):
    return [d.code for d in parse(text).diagnostics]


def test_good_text_has_no_diagnostics():
    assert parse(GOOD).ok
    assert parse(GOOD, strict=True).final_answer == "\\boxed{5}"


P11, E11 = T.prompt_name(1, 1), T.execution_name(1, 1)
BROKEN = {
    "unclosed_tag": (GOOD.replace(" " + T.close_tag(P11), ""), T.open_tag(P11)),
    "misnumbered_close": (GOOD.replace(T.close_tag(P11), T.close_tag(T.prompt_name(1, 2))),
                          T.close_tag(T.prompt_name(1, 2))),
    "misnumbered_prompt": (GOOD.replace(P11, T.prompt_name(1, 2)), T.open_tag(T.prompt_name(1, 2))),
    "count_mismatch": (GOOD.replace(f"{T.open_tag(E11)}\n2+3=5\n{T.close_tag(E11)}", T.NO_PROMPT_TEXT),
                       T.open_tag(T.execution_block_name(1))),
    "stage_gap": (GOOD.replace(T.plan_name(1), T.plan_name(2)).replace(T.execution_block_name(1),
                                                                       T.execution_block_name(2))
                  .replace(P11, T.prompt_name(2, 1)).replace(E11, T.execution_name(2, 1)), T.open_tag(T.plan_name(2))),
    "stray_text": (GOOD.replace(T.open_tag(T.FINAL_ANSWER), "loose words\n\n" + T.open_tag(T.FINAL_ANSWER)),
                   "loose words"),
    "execution_without_plan": (GOOD.replace(T.open_tag(T.FINAL_ANSWER),
                                            f"{T.open_tag(T.execution_block_name(2))}\n{T.NO_PROMPT_TEXT}\n"
                                            f"{T.close_tag(T.execution_block_name(2))}\n\n{T.open_tag(T.FINAL_ANSWER)}"),
                               T.open_tag(T.execution_block_name(2))),
    "missing_final_answer": (GOOD.replace(f"{T.open_tag(T.FINAL_ANSWER)}\n\\boxed{{5}}\n{T.close_tag(T.FINAL_ANSWER)}\n",
                                          ""), None),
    "misnumbered_execution": (GOOD.replace(E11, T.execution_name(1, 2)), T.open_tag(T.execution_name(1, 2))),
    "duplicate_block": (GOOD.replace(T.close_tag(T.THINK), f"{T.open_tag(T.FINAL_ANSWER)}\n6\n"
                                     f"{T.close_tag(T.FINAL_ANSWER)}\n{T.close_tag(T.THINK)}"), None),
    "stray_tag": (GOOD.replace(T.close_tag(T.plan_name(1)), T.close_tag(T.plan_name(1)) + "\n" + T.close_tag(P11)),
                  None),
}


@pytest.mark.parametrize("code", list(BROKEN))
def test_each_diagnostic_code(code):
    text, anchor = BROKEN[code]
    assert text != GOOD
    assert _codes(text) == [code]
    diag = parse(text).diagnostics[0]
    if anchor is not None:
        assert diag.pos == text.index(anchor)
    with pytest.raises(TrajectoryParseError) as err:
        parse(text, strict=True)
    assert err.value.code == code
    assert err.value.pos == diag.pos
    assert f"char {diag.pos}" in str(err.value)


def test_missing_final_answer_points_at_the_end():
    text, _ = BROKEN["missing_final_answer"]
    assert parse(text).diagnostics[0].pos == len(text)


def test_unclosed_plan_ends_at_the_next_block():
    text = GOOD.replace(T.close_tag(T.plan_name(1)) + "\n", "")
    traj = parse(text)
    assert [d.code for d in traj.diagnostics] == ["unclosed_tag"]
    assert traj.diagnostics[0].pos == text.index(T.open_tag(T.plan_name(1)))
    assert traj.stages[0].prompts[0].text == "Add 2 and 3."
    assert traj.stages[0].executions[0].text == "2+3=5"


def test_unclosed_prompt_keeps_its_text_in_the_plan():
    text, _ = BROKEN["unclosed_tag"]
    traj = parse(text)
    assert traj.stages[0].prompts[0].text == "Add 2 and 3."
    assert render(parse(render(traj))) == render(traj)


def test_stray_text_is_reported_not_rendered():
    text, _ = BROKEN["stray_text"]
    traj = parse(text)
    assert "loose words" in str(traj.diagnostics[0])
    assert "loose words" not in render(traj)


def test_untagged_text_is_one_stray_text_diagnostic():
    traj = parse("just thinking, \\boxed{3}")
    assert [d.code for d in traj.diagnostics] == ["stray_text"] and traj.diagnostics[0].pos == 0
    assert traj.stages == [] and traj.final_answer is None


def test_parse_rejects_non_text():
    with pytest.raises(TypeError):
        parse(b"bytes")  # type: ignore[arg-type]
