"""Countdown for evaluation: seeded items for any seed, plain-words questions, and grading through the verifier."""

from __future__ import annotations

import pytest

from sprint.tasks.countdown import (
    HELDOUT_TARGETS,
    CountdownItem,
    check_countdown,
    grade_countdown,
    item_from_question,
    load_countdown,
)


def test_load_countdown_is_seeded_and_held_out():
    items = load_countdown("test", 25, seed=123)
    assert items == load_countdown("test", 25, seed=123)
    assert [it.id for it in items] == [f"countdown-test-123-{i:06d}" for i in range(25)]
    assert all(isinstance(it, CountdownItem) and it.target in HELDOUT_TARGETS for it in items)
    assert all(grade_countdown("\\boxed{" + it.solution + "}", it) for it in items)
    assert [it.id for it in load_countdown("test", 3, seed=124)] != [it.id for it in items[:3]]
    val = load_countdown("val", 5, seed=1)
    assert all(it.target not in HELDOUT_TARGETS and it.split == "val" for it in val)
    with pytest.raises(ValueError):
        load_countdown("test", 0, 1)


def test_grading():
    item = item_from_question("Using the numbers [25, 4, 3, 7], create an equation that equals 79. Think first.")
    assert item.question == "Using the numbers [25, 4, 3, 7], create an equation that equals 79."
    assert item.numbers == (25, 4, 3, 7) and item.target == 79
    good = "<think>\n...\n<Final_answer>\n\\boxed{25*4-3*7}\n</Final_answer>\n</think>"
    assert grade_countdown(good, item)
    assert grade_countdown("25*4 - 3*7", item)  # a bare expression
    # The last box of the final-answer block counts, not an earlier box in the thinking.
    assert not grade_countdown("\\boxed{25*4-3*7} ... <Final_answer>\\boxed{25+4}</Final_answer>", item)
    assert not grade_countdown("\\boxed{25*4-3*7+7}", item)
    v = check_countdown("The answer is 79.", item)
    assert not v.ok and "unparsable" in v.reason
    assert not check_countdown("", item).ok
