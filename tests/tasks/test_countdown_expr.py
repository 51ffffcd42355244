"""Countdown rules: the safe expression parser, the verifier and the solver."""

from __future__ import annotations

import pytest

from sprint.tasks.countdown.expr import (
    ExpressionError,
    check_answer,
    evaluate,
    first_solution,
    parse_expression,
    solutions,
    to_text,
)

NUMS = (25, 4, 3, 7)  # 25*4 - 3*7 = 79


@pytest.mark.parametrize("answer", [
    "25*4-3*7", "(25*4)-(3*7)", "25 × 4 − 3 × 7", "25\\times 4 - 3\\cdot 7", "[25*4]-[3*7]",
    "25*4-3*7 = 79", "79 = 25*4 - 3*7", "\\left(25*4\\right)-3*7", "25x4-3x7",
])
def test_valid_answers_in_many_spellings(answer):
    assert check_answer(answer, NUMS, 79).ok


@pytest.mark.parametrize("answer, reason", [
    ("25*4-3*6", "uses"),              # a number that is not given
    ("25*4-3*7+7", "uses"),            # a number used twice
    ("25*4-7*3*1", "uses"),            # an extra number
    ("25*4-21", "uses"),               # a number missing (21 is not given)
    ("25*4-3*7 = 80", "claims"),        # right-hand side is not the target
    ("25*4+3*7", "equals 121"),         # wrong value
])
def test_wrong_number_use_and_wrong_values(answer, reason):
    v = check_answer(answer, NUMS, 79)
    assert not v.ok and reason in v.reason


def test_non_integer_division_is_rejected():
    # 7/2 is not exact even though (7/2)*4 = 14 would be.
    v = check_answer("7/2*4", (7, 2, 4), 14)
    assert not v.ok and "exact" in v.reason
    assert check_answer("4/2*7", (7, 2, 4), 14).ok


def test_negative_and_zero_intermediates_are_rejected():
    # 50 - 60 + 20 = 10 mathematically, but 50 - 60 is negative.
    v = check_answer("50-60+20", (50, 60, 20), 10)
    assert not v.ok and "not positive" in v.reason
    assert check_answer("50+20-60", (50, 60, 20), 10).ok
    # 5 - 5 = 0 is not positive either (larger minus smaller means strictly larger).
    assert not check_answer("(5-5)+10", (5, 5, 10), 10).ok


def test_reused_numbers_follow_multiplicity():
    assert check_answer("6+6+1", (6, 6, 1), 13).ok
    assert not check_answer("6+6+6", (6, 6, 1), 18).ok
    assert not check_answer("6+1", (6, 6, 1), 7).ok


@pytest.mark.parametrize("text", [
    "__import__('os').system('echo hi')", "25**4", "-25+4*3*7", "25*4-3*7)", "(25*4-3*7", "", "25 4 3 7", "2.5*4",
    "abs(25)",
])
def test_parser_rejects_anything_else_without_evaluating_it(text):
    assert not check_answer(text, NUMS, 79).ok
    if text:
        with pytest.raises(ExpressionError):
            parse_expression(text)


def test_minimal_parentheses_render_parses_back_to_the_same_value():
    for text in ["(1+2)*3", "1-(2-3+4)", "8/(4/2)", "(8/4)/2", "2*(3+4)-5", "((76*1)-43)*3"]:
        e = parse_expression(text)
        assert to_text(parse_expression(to_text(e))) == to_text(e)
    assert to_text(parse_expression("((1+2))+3")) == "1+2+3"
    assert to_text(parse_expression("1-(2+3)")) == "1-(2+3)"


def test_solver_finds_all_valid_solutions():
    sols = solutions((25, 4, 3, 7), 79)
    assert sols and len(sols) == len(set(sols))
    for s in sols:
        assert check_answer(s, NUMS, 79).ok, s
        assert evaluate(parse_expression(s)) == 79
    assert "25*4-7*3" in sols or "25*4-3*7" in sols


def test_solver_first_solution_and_unsolvable():
    assert check_answer(first_solution((3, 5), 15), (3, 5), 15).ok
    assert first_solution((2, 2), 5) is None
    assert solutions((1, 1), 3) == []
    with pytest.raises(ValueError):
        solutions((), 3)


@pytest.mark.parametrize("answer", ["(" * 3000 + "1" + ")" * 3000, "+".join(["1"] * 3000), "(" * 250 + "2"])
def test_runaway_answers_are_rejected_not_raised(answer):
    # A model's runaway output once reached the recursive parser with thousands of nested brackets (RecursionError).
    v = check_answer(answer, [1, 2, 3, 4], 10)
    assert not v.ok and "tokens" in v.reason
    with pytest.raises(ExpressionError, match="at most"):
        parse_expression(answer)


def test_longest_real_answers_still_parse():
    deep = lambda e: "(" * 30 + e + ")" * 30
    assert check_answer(f"{deep('8 * 3')} - {deep('10 / 5')} + {deep('4')}", [8, 3, 10, 5, 4], 26).ok
