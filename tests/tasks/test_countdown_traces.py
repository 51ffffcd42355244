"""Countdown search traces: one DFS, two formats, through curation's packing and rendering; the token ratio."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sprint.format import SequentialTrace, parse, parse_sequential, render_body, sequential_metrics, \
    trajectory_metrics
from sprint.tasks.countdown.expr import check_answer
from sprint.tasks.countdown.problems import Problem, generate
from sprint.tasks.countdown.search import search
from sprint.tasks.countdown.traces import TraceConfig, build_records, build_traces

REPO = Path(__file__).resolve().parents[2]


def test_search_text_of_a_known_problem():
    s = search(Problem((17, 18, 51, 1), 16), order="heuristic")
    assert s.solved_at == 3
    text = s.sequential_text()
    assert text.splitlines()[:4] == ["Reach 16 from [51 18 17 1]", "Explore 17-1=16", "[51 18 16]",
                                     "51+18=69 [69 16] 85 53"]
    assert text.count("Dead end") == 2 and text.count("Explore") == 3
    assert text.endswith("51-18=33 [33 17] 50 16\n33-17=16\nSolution (51-18)-(17*1)")
    assert check_answer(s.solution, (17, 18, 51, 1), 16).ok


@pytest.mark.parametrize("check, last_lines", [
    ("distance", ["51+18=69 [69 16] 85:69 53:37", "51-18=33 [33 17] 50:34 16:0"]),
    ("target", ["51+18=69 [69 16] 16: 85 53", "51-18=33 [33 17] 16: 50 16"]),
    ("compare", ["51+18=69 [69 16] 16: 85> 53>", "51-18=33 [33 17] 16: 50> 16="]),
])
def test_checks_write_each_last_pair_result_against_the_target(check, last_lines):
    plain = search(Problem((17, 18, 51, 1), 16), order="heuristic")
    s = search(Problem((17, 18, 51, 1), 16), order="heuristic", check=check)
    text = s.sequential_text()
    assert text.splitlines()[:4] == ["Reach 16 from [51 18 17 1]", "Explore 17-1=16", "[51 18 16]", last_lines[0]]
    # The same search (branches, solution); only the pair lines differ.
    assert text.endswith(last_lines[1] + "\n33-17=16\nSolution (51-18)-(17*1)")
    assert (s.solved_at, s.solution) == (plain.solved_at, plain.solution)
    assert re.sub(r" \d+:(?= )|:\d+|[<>=](?=\s|$)", "", text) == plain.sequential_text()
    # Every result of a last pair carries its check against the target, and only a hit checks as equal.
    for p in generate("train", 30, 5):
        for ln in search(p, check=check).sequential_text().splitlines():
            if "] " not in ln or ln.startswith("Reach"):
                continue
            items = ln.split("] ")[1].split()
            if check != "distance":
                assert items.pop(0) == f"{p.target}:"
            for item in items:
                if check == "distance":
                    r, d = map(int, item.split(":"))
                    assert d == abs(r - p.target) and (d == 0) == (r == p.target)
                elif check == "compare":
                    r, mark = int(item[:-1]), item[-1]
                    assert mark == ("=" if r == p.target else ">" if r > p.target else "<")


def test_unknown_check_is_refused():
    with pytest.raises(ValueError, match="trace.check must be one of"):
        TraceConfig(check="equal")
    with pytest.raises(ValueError, match="trace.check must be one of"):
        search(Problem((17, 18, 51, 1), 16), check="equal")


def test_heuristic_order_and_branch_bound():
    p = generate("train", 1, 3)[0]
    s = search(p, max_branches=5, order="heuristic")
    dist = [abs(m.result - p.target) for m, _ in s.ranked]
    assert dist == sorted(dist) and len(s.ranked) <= 5
    assert len(s.branches) <= 5


def test_solutions_are_correct_and_sequential_text_is_the_branches_in_order():
    for p in generate("train", 100, 11):
        t = build_traces(p, TraceConfig())
        if t.reason:
            assert t.reason.startswith(("unsolved", "low_ratio"))
            continue
        assert check_answer(t.search.solution, p.numbers, p.target).ok
        k = t.search.solved_at
        expected = "\n".join([t.search.intro] + [x for b in t.search.branches[:k] for x in (b.prompt, b.execution)])
        assert t.sequential_thinking == expected
        assert "Dead end" not in t.search.branches[k - 1].execution


def test_steps_dag_and_packing():
    cfg = TraceConfig(width=4)
    p = next(p for p in generate("train", 200, 2) if (s := search(p)).solved_at and s.solved_at > 5)
    t = build_traces(p, cfg)
    k = t.search.solved_at
    branches = [s for s in t.steps if s.prompt]
    # The whole stage holding the first solution is explored: a multiple of W branches (or all the moves).
    assert len(branches) == min(len(t.search.ranked), -(-k // 4) * 4)
    assert all(t.parents[s.id] == [1] for s in branches)  # independent of each other
    final = t.steps[-1]
    assert final.prompt is None and t.parents[final.id] == [k + 1]
    stages = t.packing.stages
    assert [stages[s.id] for s in branches] == [1 + i // 4 for i in range(len(branches))]
    assert stages[final.id] == stages[k + 1] + 1 == t.packing.num_stages
    assert t.packing.kept


def test_records_parse_back_strictly_and_match_the_search():
    for i, p in enumerate(generate("train", 40, 4)):
        t = build_traces(p, TraceConfig(width=6, max_branches=16))
        if t.reason:
            continue
        sprint_rec, seq_rec, *exec_recs = build_records(f"x{i}", t)
        assert [r["id"] for r in exec_recs] == [f"x{i}#exec-{p_.id}" for p_ in parse(
            sprint_rec["messages"][-1]["content"]).prompts]
        assert all(r["role"] == "executor" and r["numbers"] == list(p.numbers) for r in exec_recs)
        assert len(build_records(f"x{i}", t, executor_records=False)) == 2
        assert sprint_rec["format"] == "sprint" and seq_rec["format"] == "sequential"
        assert sprint_rec["question"] == p.question == sprint_rec["messages"][1]["content"]
        body = sprint_rec["messages"][-1]["content"]
        traj = parse(body, strict=True)
        assert render_body(traj) == body
        assert traj.final_answer == "\\boxed{" + t.search.solution + "}"
        assert all(len(st.prompts) <= 6 for st in traj.stages)
        # Every branch's execution text is the search's text for that branch.
        execs = [e.text for st in traj.stages for e in st.executions]
        assert execs == [b.execution for b in t.search.branches[:len(execs)]]
        seq = parse_sequential(seq_rec["messages"][-1]["content"])
        assert seq.thinking == t.sequential_thinking and seq.answer == traj.final_answer
        assert sprint_rec["numbers"] == list(p.numbers) and seq_rec["target"] == p.target


def test_sprint_sequential_tokens_are_under_half_of_sequential(countdown_tokenizer):
    """The design goal, on a fixed sample with the shipped config: ratio of means < 0.5, longest third < 0.4."""
    from sprint.tasks.countdown.data import load_data_config, ratio_stats
    from sprint.tasks.countdown.tokenizer import CountdownTokenCounter
    from sprint.curate.packing import to_trajectory

    cfg = load_data_config(REPO / "configs" / "countdown-data.yaml").trace
    counter = CountdownTokenCounter(countdown_tokenizer)
    sp, sq = [], []
    for p in generate("train", 300, 100):
        t = build_traces(p, cfg)
        if t.reason:
            continue
        traj = to_trajectory(p.question, t.steps, t.packing, t.final_answer)
        sp.append(trajectory_metrics(traj, counter).sequential_tokens)
        sq.append(sequential_metrics(SequentialTrace(t.sequential_thinking, t.final_answer), counter)
                  .sequential_tokens)
    r = ratio_stats(sp, sq)
    assert len(sp) > 280
    assert r["all"]["ratio_of_means"] < 0.5
    assert r["longest_third"]["ratio_of_means"] < 0.4


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="trace.width"):
        TraceConfig(width=0)
    with pytest.raises(ValueError, match="max_branches"):
        TraceConfig(max_branches=0)


def test_outcome_lines_open_every_later_stage():
    """`trace.outcomes`: stage k+1's plan opens with one word per stage-k execution, up to the first Solution; the
    "Based on" line still names the execution that word stands for; records still parse back cleanly."""
    from sprint.tasks.countdown.traces import outcome_line

    assert outcome_line([False, False, True, False, True]) == "Dead Dead Solution"
    assert outcome_line([False, False]) == "Dead Dead"
    p = Problem((96, 93, 54, 7), 117)
    plain = build_traces(p, TraceConfig(width=6, order="canonical"))
    t = build_traces(p, TraceConfig(width=6, order="canonical", outcomes=True))
    assert plain.openers == {} and t.search.solved_at == 8 and t.packing.num_stages == 3
    assert t.openers == {2: "Dead Dead Dead Dead Dead Dead", 3: "Dead Solution"}
    sprint_rec = build_records("x", t)[0]
    traj = parse(sprint_rec["messages"][2]["content"])
    assert not traj.diagnostics
    assert len(traj.stages) == 3
    body = sprint_rec["messages"][2]["content"]
    assert "<Plan_2>\nDead Dead Dead Dead Dead Dead\n\n<prompt_2.1>" in body
    assert "<Plan_3>\nDead Solution\n\nBased on execution_2.2:\n</Plan_3>" in body
    # Without outcomes the rendering is unchanged (the released-data layout).
    assert "Dead Dead" not in build_records("x", plain)[0]["messages"][2]["content"]


def test_openers_must_name_existing_stages():
    from sprint.curate.packing import to_trajectory

    t = build_traces(Problem((96, 93, 54, 7), 117), TraceConfig(width=6, order="canonical"))
    with pytest.raises(ValueError, match="openers: stage 4 does not exist"):
        to_trajectory("Q", t.steps, t.packing, "A", openers={4: "Dead"})


def test_restate_solution_puts_the_solution_line_in_the_answer_plan():
    """`trace.restate_solution`: the answer plan is "Based on execution_i.j:" then that execution's Solution line,
    and the final answer is its expression; the sequential record and the executions are unchanged."""
    p = Problem((96, 93, 54, 7), 117)
    cfg = dict(width=6, order="canonical", outcomes=True)
    plain = build_traces(p, TraceConfig(**cfg))
    t = build_traces(p, TraceConfig(**cfg, restate_solution=True))
    rec, plain_rec = build_records("x", t), build_records("x", plain)
    traj = parse(rec[0]["messages"][2]["content"])
    assert not traj.diagnostics
    solving = traj.stages[1].executions[1].text.splitlines()[-1]
    assert solving == "Solution " + t.search.solution
    assert traj.stages[-1].plan.text == "Dead Solution\n\nBased on execution_2.2:\n" + solving
    assert traj.final_answer == plain.final_answer == "\\boxed{" + t.search.solution + "}"
    # Only the answer plan differs: the sequential record and every executor record are the same bytes.
    assert rec[1] == plain_rec[1] and rec[2:] == plain_rec[2:]
    assert rec[0] != plain_rec[0]


def test_outcome_solution_puts_the_expression_in_the_outcome_line():
    """`trace.outcome_solution`: the outcome line's first Solution word is followed by that execution's expression,
    which is the final answer; executions and the sequential record are unchanged."""
    from sprint.tasks.countdown.traces import outcome_line

    assert outcome_line([False, True, True], ["a", "1+2", "3+4"]) == "Dead Solution 1+2"
    assert outcome_line([False, False], [None, None]) == "Dead Dead"
    p = Problem((96, 93, 54, 7), 117)
    cfg = dict(width=6, order="canonical", outcomes=True)
    plain = build_traces(p, TraceConfig(**cfg))
    t = build_traces(p, TraceConfig(**cfg, outcome_solution=True))
    assert t.openers == {2: "Dead Dead Dead Dead Dead Dead", 3: "Dead Solution " + t.search.solution}
    rec, plain_rec = build_records("x", t), build_records("x", plain)
    traj = parse(rec[0]["messages"][2]["content"])
    assert not traj.diagnostics
    assert traj.stages[-1].plan.text == f"Dead Solution {t.search.solution}\n\nBased on execution_2.2:"
    assert traj.stages[1].executions[1].text.splitlines()[-1] == "Solution " + t.search.solution
    assert traj.final_answer == plain.final_answer
    assert rec[1] == plain_rec[1] and rec[2:] == plain_rec[2:]
    with pytest.raises(ValueError, match="outcome_solution needs trace.outcomes"):
        TraceConfig(outcome_solution=True)
    with pytest.raises(ValueError, match="choose one"):
        TraceConfig(outcomes=True, outcome_solution=True, restate_solution=True)


def test_solution_lines_reads_back_what_the_search_writes():
    from sprint.tasks.countdown.search import solution_lines

    s = search(Problem((17, 18, 51, 1), 16), order="heuristic")
    assert solution_lines(s.sequential_text()) == [s.solution] == ["(51-18)-(17*1)"]
    assert solution_lines("Dead end\nSolution  (1+2)*3 \nno Solution here") == ["(1+2)*3"]


def test_superscript_solution_digits_mark_every_solution_expression_but_the_answer():
    """`trace.solution_digits: superscript`: the executions', the outcome line's and the sequential trace's Solution
    expressions use superscript digits (single tokens, found nowhere else in a trace); the boxed answer keeps plain
    digits, and `solution_lines` reads them back as plain."""
    from sprint.tasks.countdown.search import solution_lines, solution_text
    from sprint.tasks.countdown.tokenizer import build_countdown_tokenizer

    assert solution_text("(33-12)*(98-89)", "superscript") == "(³³-¹²)*(⁹⁸-⁸⁹)"
    assert solution_text("(33-12)*9", "plain") == "(33-12)*9"
    p = Problem((96, 93, 54, 7), 117)
    cfg = dict(width=6, order="canonical", outcomes=True, outcome_solution=True)
    plain = build_traces(p, TraceConfig(**cfg))
    t = build_traces(p, TraceConfig(**cfg, solution_digits="superscript"))
    marked = solution_text(t.search.solution, "superscript")
    assert marked != t.search.solution and not re.search(r"\d", marked)
    assert t.openers[3] == "Dead Solution " + marked
    rec = build_records("x", t)
    traj = parse(rec[0]["messages"][2]["content"])
    assert not traj.diagnostics
    assert traj.stages[1].executions[1].text.splitlines()[-1] == "Solution " + marked
    assert traj.final_answer == plain.final_answer == "\\boxed{" + t.search.solution + "}"
    seq = rec[1]["messages"][2]["content"]
    assert "Solution " + marked in seq and "\\boxed{" + t.search.solution + "}" in seq
    # Nothing but the Solution expressions changes, and they read back as the plain solution.
    plain_seq = build_records("x", plain)[1]["messages"][2]["content"]
    assert seq.replace(marked, t.search.solution) == plain_seq
    assert solution_lines(seq) == [t.search.solution]
    assert check_answer(solution_lines(seq)[0], p.numbers, p.target).ok
    # One token per superscript digit with the tokenizer the option builds; the default vocabulary's ids stay.
    tok, tok0 = build_countdown_tokenizer(None, solution_digits="superscript"), build_countdown_tokenizer(None)
    ids = tok("Solution " + marked, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(tok0("Solution " + t.search.solution, add_special_tokens=False)["input_ids"])
    assert tok.decode(ids) == "Solution " + marked
    assert tok.get_vocab()["8"] == tok0.get_vocab()["8"]
    with pytest.raises(ValueError, match="trace.solution_digits"):
        TraceConfig(solution_digits="roman")


def test_superscript_whole_numbers_are_single_tokens():
    """`trace.solution_digits: superscript_whole`: the same text as `superscript`; the tokenizer gives each
    superscript number of a problem one token, so a far copy of `(⁷¹-⁴⁰)-(⁴⁸/⁴)` copies numbers, not digits that
    recur within the line. The plain text tokenizes as before, and the token counter agrees with the tokenizer."""
    from sprint.tasks.countdown.search import solution_lines, solution_text
    from sprint.tasks.countdown.tokenizer import CountdownTokenCounter, build_countdown_tokenizer

    line = "Solution " + solution_text("(71-40)-(48/4)", "superscript_whole")
    assert line == "Solution (⁷¹-⁴⁰)-(⁴⁸/⁴)" and solution_lines(line) == ["(71-40)-(48/4)"]
    whole = build_countdown_tokenizer(None, solution_digits="superscript_whole")
    digits = build_countdown_tokenizer(None, solution_digits="superscript")
    ids = whole(line, add_special_tokens=False)["input_ids"]
    assert [whole.decode([i]) for i in ids] == ["Solution", " (", "⁷¹", "-", "⁴⁰", ")", "-", "(", "⁴⁸", "/", "⁴", ")"]
    assert len(digits(line, add_special_tokens=False)["input_ids"]) == len(ids) + 3
    assert whole.decode(whole(" ⁹⁹", add_special_tokens=False)["input_ids"]) == " ⁹⁹"
    assert len(whole(" ⁹⁹", add_special_tokens=False)["input_ids"]) == 1
    assert len(whole("¹²³", add_special_tokens=False)["input_ids"]) == 2  # no piece for 123: still encodes
    # Everything else tokenizes as with plain digits, and the ids of the plain vocabulary stay.
    plain = build_countdown_tokenizer(None)
    text = "Reach 16 from [51 18 17 1]\n51-18=33 [33 17] 16: 50> 16=\n\\boxed{(51-18)-17}"
    assert whole(text)["input_ids"] == plain(text)["input_ids"]
    assert len(whole) == len(plain) + 20 + 180
    counter = CountdownTokenCounter(whole)
    texts = [line, text + "\n\n" + line, "Dead Solution " + solution_text("(33-12)*(98-89)", "superscript_whole")]
    assert counter(texts) == [len(whole(t, add_special_tokens=False)["input_ids"]) for t in texts]


def test_question_order_sorted_changes_only_the_question():
    """`trace.question_order: sorted`: the records ask with the numbers largest first (the first line then copies
    them); nothing else in the records changes."""
    p = Problem((12, 3, 40, 8), 44)
    cfg = dict(width=6, order="canonical", outcomes=True, outcome_solution=True)
    given = build_records("x", build_traces(p, TraceConfig(**cfg)))
    ordered = build_records("x", build_traces(p, TraceConfig(**cfg, question_order="sorted")))
    asked = "Using the numbers [40, 12, 8, 3], create an equation that equals 44."
    assert [r["question"] for r in ordered] == [asked] * len(ordered)
    assert all(r["numbers"] == [12, 3, 40, 8] for r in ordered)
    for a, b in zip(given, ordered):
        assert json.dumps(a).replace("[12, 3, 40, 8], create", "[40, 12, 8, 3], create") == json.dumps(b)
    with pytest.raises(ValueError, match="question_order must be one of"):
        TraceConfig(question_order="shuffled")
