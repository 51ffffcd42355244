"""Answer extraction and math-verify equivalence on tricky pairs, in the main thread and in worker threads."""

import asyncio
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from sprint.eval import grading
from sprint.eval.grading import GradeResult, accuracy, extract_answer, grade, is_equiv, is_equiv_async
from sprint.format import tags as T
from sprint.format.trajectory import render_final_answer


# ---------------------------------------------------------------------------------------------- extraction
@pytest.mark.parametrize("text, expected", [
    ("so the answer is $\\boxed{42}$.", "42"),
    ("\\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{1}{\\sqrt{2}}"),           # nested braces
    ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),                               # escaped braces do not count
    ("first \\boxed{1}, then \\boxed{2}", "2"),                          # last box wins
    ("the answer is $\\boxed 5$.", "5"),                                 # \boxed 5
    ("\\boxed  {7}", "7"),
    ("\\fbox{x+1}", "x+1"),
    ("\\boxed{3} and a truncated \\boxed{\\frac{1}{", "3"),               # unbalanced box is skipped
    ("\\boxed{}", None),
    ("no answer here", None),
    ("\\boxedsomething{9}", None),                                       # not the \boxed command
    ("\\boxed{\\text{(C)}}", "\\text{(C)}"),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_final_answer_block_is_preferred_over_a_later_box():
    text = ("<think>\nI guess \\boxed{1}\n" + render_final_answer("So $\\boxed{\\frac{1}{2}}$.")
            + "\n</think>\nLater text: \\boxed{7}")
    assert T.open_tag(T.FINAL_ANSWER) in text
    assert extract_answer(text) == "\\frac{1}{2}"


def test_final_answer_block_without_box_falls_back_to_last_box():
    text = "work \\boxed{5} more work\n" + render_final_answer("The answer is five.")
    assert extract_answer(text) == "5"


def test_unclosed_final_answer_block_runs_to_the_end():
    text = "early \\boxed{9}\n" + T.open_tag(T.FINAL_ANSWER) + "\nthus \\boxed{10}"
    assert extract_answer(text) == "10"


# ---------------------------------------------------------------------------------------------- equivalence
EQUIVALENT = [
    ("\\frac{1}{2}", "0.5"),
    ("0.5", "\\frac{1}{2}"),
    ("1/2", "\\dfrac{1}{2}"),
    ("\\frac12", "\\frac{1}{2}"),
    ("(-\\infty, 3]", "(-\\infty,3]"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
    ("\\text{Evelyn}", "\\text{Evelyn}"),
    ("\\text{(C)}", "C"),
    ("30^\\circ", "30"),
    ("30^\\circ", "30^{\\circ}"),
    ("3\\sqrt{2}", "\\sqrt{18}"),
    ("x^2+1", "1+x^2"),
    ("\\{1,2\\}", "\\{2,1\\}"),
    ("$\\frac{1}{2}$", "\\boxed{0.5}"),                                   # already wrapped inputs are kept as is
]
NOT_EQUIVALENT = [
    ("5", "-5"),
    ("-5", "5"),
    ("12", "1/2"),
    ("\\frac{1}{2}", "12"),
    ("[2,5)", "(2,5)"),
    ("\\text{Evelyn}", "\\text{Bob}"),
    ("\\text{odd}", "\\text{even}"),
    ("\\frac{\\sqrt{3}}{2}", "0.866"),
]


@pytest.mark.parametrize("gold, pred", EQUIVALENT)
def test_equivalent_pairs(gold, pred):
    assert is_equiv(pred, gold)


@pytest.mark.parametrize("gold, pred", NOT_EQUIVALENT)
def test_non_equivalent_pairs(gold, pred):
    assert not is_equiv(pred, gold)


def test_missing_prediction_is_not_equivalent():
    assert not is_equiv(None, "5")
    assert not is_equiv("  ", "5")


def test_is_equiv_in_worker_threads_matches_main_thread():
    # math-verify's own timeout uses signal.alarm, which raises off the main thread; is_equiv must not.
    pairs = EQUIVALENT[:4] + NOT_EQUIVALENT[:4]
    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(lambda gp: is_equiv(gp[1], gp[0]), pairs))
    assert got == [True] * 4 + [False] * 4
    assert threading.current_thread() is threading.main_thread()


def test_is_equiv_async():
    async def main():
        return await asyncio.gather(is_equiv_async("0.5", "\\frac{1}{2}"), is_equiv_async("-5", "5"))

    assert asyncio.run(main()) == [True, False]


def test_stuck_worker_is_killed_and_counts_as_not_equivalent(monkeypatch):
    monkeypatch.setattr(grading, "_WORKER_SLACK_S", 0.5)
    pool = grading._WorkerPool()
    worker = grading._Worker()
    pool._idle.append(worker)
    os.kill(worker.proc.pid, signal.SIGSTOP)  # a worker that never answers, like one stuck inside sympy
    try:
        assert pool.verify("0.5", "\\frac{1}{2}", timeout_s=1) is False
        assert worker.proc.poll() is not None  # killed, not returned to the pool
        assert pool._idle == []
        assert pool.verify("0.5", "\\frac{1}{2}", timeout_s=1) is True  # a fresh worker takes over
    finally:
        pool.close()


# ---------------------------------------------------------------------------------------------- grading
def test_grade_statuses_and_accuracy_over_all_items():
    results = [
        grade("... \\boxed{\\frac{1}{2}}", "0.5"),
        grade("... \\boxed{5}", "-5"),
        grade("I could not finish", "3"),
        grade(render_final_answer("$\\boxed{30^\\circ}$"), "30"),
    ]
    assert [r.status for r in results] == ["correct", "wrong", "no_answer", "correct"]
    assert results[2] == GradeResult(None, False, "no_answer")
    acc = accuracy(results)
    assert (acc.n, acc.correct, acc.wrong, acc.no_answer) == (4, 2, 2, 1)
    assert acc.accuracy == 0.5
    assert "1 no answer" in str(acc)


def test_accuracy_of_nothing_is_nan():
    acc = accuracy([])
    assert acc.n == 0 and acc.accuracy != acc.accuracy
