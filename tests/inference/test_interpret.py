"""Reading planner turns and executor outputs: what becomes plan, final answer and repairs."""

from __future__ import annotations

from sprint.inference.interpret import clean_execution, interpret_planner_turn


def kinds(turn):
    return [r.kind for r in turn.repairs]


def test_clean_plan_turn():
    t = interpret_planner_turn("<Plan_2>\nA.\n<prompt_2.1> x </prompt_2.1>\nB.", 2)
    assert t.final_answer is None and not t.ended and not t.repairs
    assert [p.id for p in t.plan.prompts] == ["2.1"] and t.plan.text.startswith("A.")


def test_final_answer_turn():
    t = interpret_planner_turn("\n<Final_answer>\nSo \\boxed{3}.\n", 4)
    assert t.plan is None and t.final_answer == "So \\boxed{3}." and not t.repairs


def test_final_answer_after_plan_without_close():
    t = interpret_planner_turn("<Plan_3>\nDone.\n<Final_answer>\n\\boxed{1}", 3)
    assert t.plan.text == "Done." and t.final_answer == "\\boxed{1}"
    assert kinds(t) == ["unclosed_plan"]


def test_text_before_plan_is_kept_and_misnumbered_plan_renumbered():
    t = interpret_planner_turn("Hmm.\n<Plan_5>\n<prompt_5.1> a </prompt_5.1>", 2)
    assert kinds(t)[:2] == ["misnumbered_plan", "text_before_plan"]
    assert "renumbered_prompt" in kinds(t)
    assert t.plan.text.startswith("Hmm.") and [p.id for p in t.plan.prompts] == ["2.1"]


def test_unclosed_prompt_is_closed_by_the_next_one():
    t = interpret_planner_turn("<Plan_1>\n<prompt_1.1> a\n<prompt_1.2> b </prompt_1.2>", 1)
    assert [p.text for p in t.plan.prompts] == ["a", "b"]
    assert "unclosed_tag" in kinds(t)


def test_second_plan_opening_ends_the_turn():
    t = interpret_planner_turn("<Plan_1>\nA.\n<Plan_2>\nB.", 1)
    assert t.ended and t.plan.text == "A." and kinds(t) == ["unexpected_tag"]


def test_partial_prompt_tag_is_not_a_prompt():
    t = interpret_planner_turn("<Plan_1>\nA.\n<prompt_1.1> a </prom", 1)
    assert t.plan.prompts[0].text.startswith("a") and not t.ended


def test_clean_execution():
    assert clean_execution("  result \n", 1, 1) == ("result", [], False)
    text, repairs, hit = clean_execution("r\n</execution_1.4>\n<execution_1.5>\nmore", 1, 1)
    assert text == "r" and hit and repairs[0].kind == "executor_wrote_tags" and repairs[0].stage == 1
