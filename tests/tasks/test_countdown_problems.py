"""Countdown problems: seeded generation, solvable by construction, splits with held-out targets, question text."""

from __future__ import annotations

import pytest

from sprint.tasks.countdown.expr import check_answer, first_solution
from sprint.tasks.countdown.problems import (
    ALL_TARGETS,
    HELDOUT_TARGETS,
    TRAIN_TARGETS,
    VAL_PERCENT,
    Problem,
    bucket,
    generate,
    has_additive_solution,
    parse_question,
    render_question,
    split_of,
)


def test_generation_is_deterministic_per_split_and_seed():
    assert generate("train", 50, 3) == generate("train", 50, 3)
    assert [p.construction for p in generate("test", 20, 3)] == [p.construction for p in generate("test", 20, 3)]
    assert generate("train", 50, 3) != generate("train", 50, 4)
    # Asking for more extends the list without changing its beginning.
    assert generate("train", 80, 3)[:50] == generate("train", 50, 3)


def test_problems_are_in_range_distinct_and_solvable_by_construction():
    problems = generate("train", 200, 0, difficulty="any") + generate("train", 200, 0)
    for p in problems:
        assert len(p.numbers) == 4 and all(1 <= n <= 99 for n in p.numbers)
        assert 10 <= p.target <= 100
        assert check_answer(p.construction, p.numbers, p.target).ok, p
    assert len({p.key for p in generate("train", 200, 0)}) == 200
    assert first_solution(problems[0].numbers, problems[0].target) is not None


def test_multiplicative_problems_have_no_additive_solution():
    for p in generate("train", 200, 1):
        assert not has_additive_solution(p.numbers, p.target)
    assert has_additive_solution((10, 20, 5, 1), 24)  # 10 + 20 - 5 - 1
    assert any(has_additive_solution(p.numbers, p.target) for p in generate("train", 50, 1, difficulty="any"))


def test_ten_percent_of_targets_are_held_out_of_training():
    assert len(ALL_TARGETS) == 91 and len(HELDOUT_TARGETS) == 9
    assert HELDOUT_TARGETS.isdisjoint(TRAIN_TARGETS) and HELDOUT_TARGETS | TRAIN_TARGETS == set(ALL_TARGETS)
    # One held-out target per decade, so the test set spans the whole range.
    assert sorted(t // 10 for t in HELDOUT_TARGETS)[:-1] == list(range(1, 9))
    for seed in (0, 7):
        assert all(p.target in TRAIN_TARGETS for p in generate("train", 300, seed))
        assert all(p.target in TRAIN_TARGETS for p in generate("val", 30, seed))
        assert all(p.target in HELDOUT_TARGETS for p in generate("test", 100, seed))


def test_validation_problems_are_never_training_problems_for_any_seed():
    val = generate("val", 30, 5)
    assert all(bucket(p) < VAL_PERCENT and split_of(p) == "val" for p in val)
    train_keys = {p.key for seed in (0, 5) for p in generate("train", 500, seed)}
    assert train_keys.isdisjoint(p.key for p in val)
    assert all(split_of(p) == "train" for p in generate("train", 100, 5))
    # The split of a problem does not depend on the order of its numbers.
    p = val[0]
    assert split_of(Problem(tuple(reversed(p.numbers)), p.target)) == "val"


def test_question_round_trip():
    p = Problem((19, 36, 55, 7), 65)
    q = render_question(p)
    assert q == "Using the numbers [19, 36, 55, 7], create an equation that equals 65."
    assert parse_question(q) == p


def test_question_order_sorted_lists_the_numbers_largest_first():
    p = Problem((19, 36, 55, 7), 65)
    assert render_question(p, "sorted") == "Using the numbers [55, 36, 19, 7], create an equation that equals 65."
    assert parse_question(render_question(p, "sorted")).key == p.key  # the same problem
    with pytest.raises(ValueError, match="question_order must be one of given, sorted, got 'random'"):
        render_question(p, "random")


@pytest.mark.parametrize("text", [
    "Using the numbers [19, 36, 55, 7], create an equation that equals 65. You can use basic arithmetic operations "
    "(+, -, *, /) and each number can only be used once. Show your work in <think> </think> tags.",
    "Using the numbers [19,36,55,7], create an equation that equals 65.",
    "Using the numbers   [ 19 ,  36 , 55 , 7 ]  ,create an equation that equals65",
    "using the numbers (19, 36, 55, 7), create an equation that equals 65",
    "Using the numbers 19, 36, 55 and 7, create an equation that equals 65.",
    "Using the numbers 19 36 55 7 create an equation that is equal to 65.",
    "Numbers: [19; 36; 55; 7]. Target: 65",
])
def test_question_parsing_variants(text):
    assert parse_question(text) == Problem((19, 36, 55, 7), 65)


@pytest.mark.parametrize("text, what", [
    ("", "empty"), ("Create an equation that equals 65.", "numbers"),
    ("Using the numbers [19, 36, 55, 7], create an equation.", "target"),
])
def test_question_parsing_errors_say_what_is_missing(text, what):
    with pytest.raises(ValueError, match=what):
        parse_question(text)


def test_bad_problems_are_rejected():
    with pytest.raises(ValueError, match="at least 2"):
        Problem((5,), 5)
    with pytest.raises(ValueError, match="positive"):
        Problem((0, 5), 5)
    with pytest.raises(ValueError, match="split"):
        generate("dev", 1, 0)
    with pytest.raises(ValueError, match="difficulty"):
        generate("train", 1, 0, difficulty="easy")


def test_training_targets_above_the_range_never_touch_the_test_targets():
    import pytest

    from sprint.tasks.countdown.expr import check_answer
    from sprint.tasks.countdown.problems import HELDOUT_TARGETS, split_of

    assert generate("train", 50, 3) == generate("train", 50, 3, train_target_max=100)   # the default is the range
    wide = generate("train", 400, 3, train_target_max=300)
    assert any(p.target > 100 for p in wide) and max(p.target for p in wide) <= 300
    assert not {p.target for p in wide} & HELDOUT_TARGETS
    assert all(split_of(p, 300) == "train" and check_answer(p.construction, p.numbers, p.target).ok for p in wide)
    val = generate("val", 100, 3, train_target_max=300)
    assert not {p.key for p in val} & {p.key for p in wide}
    assert generate("test", 30, 3) == generate("test", 30, 3, train_target_max=300)   # test is unchanged
    with pytest.raises(ValueError, match="train_target_max"):
        generate("train", 1, 0, train_target_max=50)
