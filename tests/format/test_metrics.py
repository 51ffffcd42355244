"""Token metrics on hand-built trajectories with known counts (whitespace counter and a tiny local HF tokenizer)."""

from __future__ import annotations

import math

import pytest

from sprint.format import (
    Execution,
    HFTokenCounter,
    Plan,
    Prompt,
    SequentialTrace,
    Stage,
    Trajectory,
    load_token_counter,
    parse,
    render,
    sequential_metrics,
    trajectory_metrics,
    whitespace_counter,
)
from sprint.format import tags as T


def words(n: int, w: str = "w") -> str:
    return " ".join([w] * n)


def three_prompt_stage() -> Stage:
    """P_1..P_4 = 5, 3, 2, 4 words (text before + prompt text); E_1..E_3 = 10, 6, 1 words."""
    plan = Plan([words(3) + "\n\n", Prompt(1, 1, words(2)), "\n" + words(2) + "\n", Prompt(1, 2, words(1)),
                 "\n" + words(1) + " ", Prompt(1, 3, words(1)), "\n\n" + words(4)])
    return Stage(1, plan, [Execution(1, 1, words(10)), Execution(1, 2, words(6)), Execution(1, 3, words(1))])


def no_prompt_stage() -> Stage:
    return Stage(2, Plan([words(3)]), [])  # renders "No prompt to execute."; the planner wrote 3 words


def known_trajectory() -> Trajectory:
    return Trajectory("How many words?", [three_prompt_stage(), no_prompt_stage()], words(3) + " \\boxed{5}")


# Stage 1: plan 5+3+2+4 = 14, executions 10+6+1 = 17.  Stage 2: 3.  Final answer: 4.
TOTAL = 14 + 17 + 3 + 4
# W = inf: prompts ready at 5, 8, 10; stage 1 = max(14, 5+10, 8+6, 10+1) = 15.
SEQ_INF = 15 + 3 + 4
# W = 2: the planner holds one stream until 14; E_1 runs 5..15 on the other, E_2 waits for the planner's stream:
# 14..20, E_3 takes the stream freed at 15: 15..16. Stage 1 = 20.
SEQ_W2 = 20 + 3 + 4
# W = 3: E_1 5..15, E_2 8..14, E_3 on the stream freed at 14: 14..15. Stage 1 = 15 = the W = inf value.
SEQ_W3 = SEQ_INF


def test_known_counts_whitespace():
    m = trajectory_metrics(known_trajectory(), whitespace_counter)
    assert m.total_tokens == TOTAL
    assert m.sequential_tokens == SEQ_INF
    assert m.stages == 2
    assert m.prompts_per_stage == [3, 0]
    assert m.mean_prompts_per_stage == 1.5
    assert m.final_answer_tokens == 4
    assert m.stage_costs[0].plan_segments == [5, 3, 2, 4]
    assert m.stage_costs[0].executions == [10, 6, 1]
    assert m.stage_costs[1].plan_segments == [3] and m.stage_costs[1].executions == []


@pytest.mark.parametrize("streams, expected", [(1, TOTAL), (2, SEQ_W2), (3, SEQ_W3), (4, SEQ_INF), (100, SEQ_INF),
                                               (math.inf, SEQ_INF)])
def test_finite_executors(streams, expected):
    m = trajectory_metrics(known_trajectory(), whitespace_counter)
    assert m.sequential_tokens_with(streams) == expected


def test_executors_must_be_positive():
    m = trajectory_metrics(known_trajectory(), whitespace_counter)
    with pytest.raises(ValueError):
        m.sequential_tokens_with(0)


def test_metrics_survive_render_and_parse():
    traj = known_trajectory()
    again = parse(render(traj))
    assert again.ok
    a, b = trajectory_metrics(traj, whitespace_counter), trajectory_metrics(again, whitespace_counter)
    assert (a.sequential_tokens, a.total_tokens, a.stage_costs) == (b.sequential_tokens, b.total_tokens, b.stage_costs)


def test_plan_without_prompts_costs_its_plan():
    traj = Trajectory("Q", [Stage(1, Plan([words(7)]), [], execution_block=False)], words(2))
    m = trajectory_metrics(traj, whitespace_counter)
    assert (m.sequential_tokens, m.total_tokens, m.stages, m.prompts_per_stage) == (9, 9, 1, [0])
    assert m.sequential_tokens_with(1) == 9


def test_late_long_prompt_sets_the_stage_cost():
    # Max over j of (|P_1|+..+|P_j| + |E_j|): a late prompt with a long execution dominates.
    plan = Plan([words(1), Prompt(1, 1, words(1)), words(5), Prompt(1, 2, words(1)), words(2)])
    traj = Trajectory("Q", [Stage(1, plan, [Execution(1, 1, words(3)), Execution(1, 2, words(20))])], "")
    m = trajectory_metrics(traj, whitespace_counter)
    assert m.sequential_tokens == (1 + 1 + 5 + 1) + 20
    assert m.total_tokens == 10 + 23


def test_more_executions_than_prompts_start_when_the_plan_ends():
    traj = parse(render(Trajectory("Q", [Stage(1, Plan([words(4), Prompt(1, 1, words(1))]),
                                               [Execution(1, 1, words(2)), Execution(1, 2, words(9))])], "a")))
    assert [d.code for d in traj.diagnostics] == ["count_mismatch"]
    m = trajectory_metrics(traj, whitespace_counter)
    assert m.sequential_tokens == 5 + 9 + 1
    assert m.total_tokens == 5 + 11 + 1


def test_math_with_angle_brackets_is_counted():
    plan = Plan(["if a<b>c then", Prompt(1, 1, "check x<y> z")])
    traj = parse(render(Trajectory("Q", [Stage(1, plan, [Execution(1, 1, "<b> ok")])], "$1<2$")))
    assert traj.ok
    m = trajectory_metrics(traj, whitespace_counter)
    # "if a<b>c then" = 3, "check x<y> z" = 3, "<b> ok" = 2, "$1<2$" = 1. The paper's regex would drop a<b>c's "<b>".
    assert m.total_tokens == 9
    assert m.sequential_tokens == 3 + 3 + 2 + 1


def test_sequential_trace_metrics():
    m = sequential_metrics(SequentialTrace(thinking=words(12), answer="so \\boxed{1}"), whitespace_counter)
    assert (m.sequential_tokens, m.total_tokens, m.stages) == (14, 14, 0)
    assert m.sequential_tokens_with(1) == 14


# ---------------------------------------------------------------------------------------------- HF tokenizer
@pytest.fixture(scope="module")
def hf_counter(tiny_tokenizer_dir) -> HFTokenCounter:
    return load_token_counter(str(tiny_tokenizer_dir))


def test_hf_counter_counts_without_special_tokens(hf_counter):
    tok = hf_counter.tokenizer
    text = "Let me think step by step."
    assert hf_counter([text, ""]) == [len(tok(text, add_special_tokens=False)["input_ids"]), 0]
    assert hf_counter([]) == []
    # Tags are single tokens in this tokenizer; a<b>c is not a tag and costs several tokens.
    assert hf_counter([T.open_tag(T.prompt_name(1, 1))]) == [1]
    assert hf_counter(["a<b>c"])[0] > 1


def test_hf_known_counts(hf_counter):
    """Every metric equals the same formula applied to the tokenizer's counts of each piece."""
    c = lambda s: hf_counter([s.strip()])[0]  # noqa: E731
    pre, p1, e1 = "The planner thinks: a<b>c.", "Add 2 and 3.", "2 + 3 = 5, so 5."
    mid, p2, e2 = "Then, in parallel,", "Multiply 4 * 5.", "4 * 5 = 20"
    tail, final = "Both parts are done.", "So $\\boxed{25}$."
    plan = Plan([pre + "\n", Prompt(1, 1, p1), "\n" + mid + "\n", Prompt(1, 2, p2), "\n" + tail])
    traj = Trajectory("Q", [Stage(1, plan, [Execution(1, 1, e1), Execution(1, 2, e2)]),
                            Stage(2, Plan(["Add them."]), [])], final)
    P = [c(pre) + c(p1), c(mid) + c(p2), c(tail)]
    E = [c(e1), c(e2)]
    stage1_inf = max(sum(P), P[0] + E[0], P[0] + P[1] + E[1])
    stage1_w1 = sum(P) + sum(E)
    # W = 2: the planner's stream is busy until sum(P); one executor stream is free from the start.
    e1_end = P[0] + E[0]
    e2_end = max(min(e1_end, sum(P)), P[0] + P[1]) + E[1]
    stage1_w2 = max(sum(P), e1_end, e2_end)
    rest = c("Add them.") + c(final)
    m = trajectory_metrics(traj, hf_counter)
    assert m.total_tokens == stage1_w1 + rest
    assert m.sequential_tokens == stage1_inf + rest
    assert m.sequential_tokens_with(math.inf) == m.sequential_tokens
    assert m.sequential_tokens_with(1) == m.total_tokens
    assert m.sequential_tokens_with(2) == stage1_w2 + rest
    # Tag tokens are not counted: the rendered text holds more tokens than the metric's total.
    assert hf_counter([render(traj, question=False)])[0] > m.total_tokens


def test_hf_reference_trajectories_are_consistent(shared_dir, hf_counter):
    files = sorted((shared_dir / "fixtures" / "sprint_reference" / "math500_sprint").glob("*.txt"))[:20]
    for path in files:
        m = trajectory_metrics(parse(path.read_text()), hf_counter)
        assert m.sequential_tokens_with(1) == m.total_tokens, path.name
        assert m.sequential_tokens <= m.sequential_tokens_with(2) <= m.total_tokens, path.name
        assert m.stages == len(m.prompts_per_stage) >= 1, path.name
