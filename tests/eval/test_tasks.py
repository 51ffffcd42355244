"""Evaluation tasks: MATH-500 loading, GPQA option shuffling and letter extraction."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sprint.eval.tasks import (GPQATask, LETTERS, Math500Task, TaskItem, extract_letter, load_task, option_order,
                               select)
from sprint.format.trajectory import render_final_answer, render_question



@pytest.fixture
def math500(shared_dir) -> Path:
    return shared_dir / "data" / "math500.jsonl"


# ---------------------------------------------------------------------------------------------- MATH-500
def test_math500_loads_the_local_file(math500):
    items = Math500Task(math500).load()
    assert len(items) == 500
    assert len({it.id for it in items}) == 500
    first = items[0]
    assert first.id == "test/precalculus/807.json"
    assert first.question.startswith("Convert the point $(0,3)$")
    assert first.gold == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert first.meta == {"level": 2, "subject": "Precalculus"}
    assert {it.meta["level"] for it in items} == {1, 2, 3, 4, 5}


def test_math500_subset_is_first_n_or_a_seeded_sample_in_file_order(math500):
    task = load_task("math500", math500)
    all_ids = [it.id for it in task.load()]
    assert [it.id for it in task.load(n=5)] == all_ids[:5]
    a = [it.id for it in task.load(n=20, seed=3)]
    assert a == [it.id for it in task.load(n=20, seed=3)]
    assert a != [it.id for it in task.load(n=20, seed=4)]
    assert a == [i for i in all_ids if i in set(a)]  # file order kept


def test_math500_grading_uses_the_model_text_only(math500):
    task = Math500Task(math500)
    item = task.load(n=1)[0]
    right = render_question(item.question) + "\n\n" + render_final_answer("$\\boxed{(3, \\frac{\\pi}{2})}$")
    assert task.grade(right, item).correct
    wrong = render_question("is it \\boxed{(3, \\frac{\\pi}{2})}?") + "\n\nI think \\boxed{(3, 0)}"
    assert not task.grade(wrong, item).correct
    none = task.grade(render_question("\\boxed{1}") + "\n\nno idea", item)
    assert none.status == "no_answer" and none.answer is None


def test_math500_bad_input_names_the_line(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text(json.dumps({"problem": "1+1", "answer": "2", "unique_id": "a"}) + "\n{oops\n")
    with pytest.raises(ValueError, match=":2: not valid JSON"):
        Math500Task(p).load()
    p.write_text(json.dumps({"problem": "1+1", "unique_id": "a"}) + "\n")
    with pytest.raises(ValueError, match="item 1: missing field 'answer'"):
        Math500Task(p).load()
    p.write_text("".join(json.dumps({"problem": "x", "answer": "1", "unique_id": "a"}) + "\n" for _ in range(2)))
    with pytest.raises(ValueError, match="item 2 repeats id 'a'"):
        Math500Task(p).load()
    with pytest.raises(FileNotFoundError):
        Math500Task(tmp_path / "missing.jsonl").load()


def test_select_rejects_bad_n():
    items = [TaskItem(str(i), "q", "a") for i in range(3)]
    assert select(items, 10, 0) == items
    with pytest.raises(ValueError, match="n must be >= 1"):
        select(items, 0, None)


# ---------------------------------------------------------------------------------------------- GPQA
def _gpqa_csv(path: Path, n: int = 12) -> Path:
    cols = ["Record ID", "Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2",
            "Incorrect Answer 3", "Subdomain", "High-level domain"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for i in range(n):
            w.writerow({"Record ID": f"rec{i:03d}", "Question": f"Question number {i}?",
                        "Correct Answer": f"right {i}", "Incorrect Answer 1": f"wrong-a {i}",
                        "Incorrect Answer 2": f"wrong-b {i}", "Incorrect Answer 3": f"wrong-c {i}",
                        "Subdomain": "Physics (general)", "High-level domain": "Physics"})
    return path


def test_gpqa_options_are_shuffled_deterministically_and_the_correct_letter_is_tracked(tmp_path):
    items = GPQATask(_gpqa_csv(tmp_path / "gpqa.csv")).load()
    assert len(items) == 12
    for it in items:
        i = int(it.id[3:])
        opts = it.meta["options"]
        assert sorted(opts) == sorted([f"right {i}", f"wrong-a {i}", f"wrong-b {i}", f"wrong-c {i}"])
        assert opts[LETTERS.index(it.gold)] == f"right {i}"
        assert f"({it.gold}) right {i}" in it.question
        assert it.question.startswith(f"Question number {i}?")
        assert "\\boxed{}" in it.question
        assert it.meta["subdomain"] == "Physics (general)"
    # The shuffle really shuffles: the correct answer is not always in the same place.
    assert len({it.gold for it in items}) > 1
    # Same order when loaded again, and from a fresh Python process (no dependence on hash randomisation).
    again = GPQATask(tmp_path / "gpqa.csv").load()
    assert [(it.question, it.gold) for it in again] == [(it.question, it.gold) for it in items]
    code = ("from sprint.eval.tasks import option_order; print([option_order(f'rec{i:03d}') for i in range(12)])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": ""}).stdout
    assert out.strip() == str([option_order(f"rec{i:03d}") for i in range(12)])
    # A different shuffle seed gives another order.
    assert [option_order(f"rec{i:03d}", 1) for i in range(12)] != [option_order(f"rec{i:03d}") for i in range(12)]


def test_gpqa_grading_and_bad_rows(tmp_path):
    task = GPQATask(_gpqa_csv(tmp_path / "gpqa.csv", 2))
    item = task.load()[0]
    other = next(letter for letter in LETTERS if letter != item.gold)
    assert task.grade(f"so \\boxed{{{item.gold}}}", item).correct
    g = task.grade(f"so \\boxed{{{other}}}", item)
    assert (g.correct, g.answer, g.status) == (False, other, "wrong")
    # The question block lists every option "(A) ..."; only the model's text counts.
    assert task.grade(render_question(item.question) + "\n\nI cannot tell.", item).status == "no_answer"
    with open(tmp_path / "bad.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2"])
        w.writerow(["q", "a", "b", "c"])
    with pytest.raises(ValueError, match="item 1 \\(line 2\\): missing field 'Incorrect Answer 3'"):
        GPQATask(tmp_path / "bad.csv").load()


@pytest.mark.parametrize("text, letter", [
    ("The answer is \\boxed{B}.", "B"),
    ("$\\boxed{\\text{B}}$", "B"),
    ("\\boxed{\\textbf{C}}", "C"),
    ("\\boxed{(D)}", "D"),
    ("\\boxed{b}", "B"),
    ("\\boxed{\\text{(A) } 42 \\text{ GeV}}", "A"),
    ("\\boxed{C) the second one}", "C"),
    ("I pick (A) at first, but on reflection (B)", "B"),
    ("Answer: B", "B"),
    ("So the answer is (C).", "C"),
    ("**Answer:** D", "D"),
    ("After all that, the final answer is: A", "A"),
    ("Option (A) is wrong. Answer: C. Though (D) was close.", "C"),   # an answer line beats a later "(D)"
    ("\\boxed{42 GeV}", None),                                         # box with no letter: no guess
    ("I cannot decide.", None),
    ("Between A and B, neither.", None),
    (render_final_answer("\\boxed{D}") + "\n\\boxed{A}", "D"),         # the final-answer block wins
])
def test_extract_letter(text, letter):
    assert extract_letter(text) == letter


def test_load_task_rejects_unknown_names():
    with pytest.raises(ValueError, match="task must be one of"):
        load_task("mmlu")


# ---------------------------------------------------------------------------------------------- Countdown
def test_countdown_items_are_seeded_held_out_problems():
    countdown = pytest.importorskip("sprint.tasks.countdown")
    task = load_task("countdown")
    items = task.load(n=6, seed=1)
    assert [it.id for it in items] == [f"countdown-test-1-{i:06d}" for i in range(6)]
    assert all(it.meta["target"] in countdown.HELDOUT_TARGETS for it in items)
    assert all(it.question.startswith("Using the numbers [") for it in items)
    assert [it.question for it in task.load(n=6, seed=1)] == [it.question for it in items]
    assert [it.question for it in task.load(n=6, seed=2)] != [it.question for it in items]
    assert len(task.load()) == 1000 and task.settings()["split"] == "test"


def test_countdown_question_order_sorted_keeps_the_items(tmp_path):
    pytest.importorskip("sprint.tasks.countdown")
    given, ordered = load_task("countdown").load(n=20, seed=1), load_task("countdown", question_order="sorted").load(
        n=20, seed=1)
    assert [(it.id, it.meta) for it in given] == [(it.id, it.meta) for it in ordered]
    for it in ordered:
        listed = [int(x) for x in it.question.split("[")[1].split("]")[0].split(", ")]
        assert listed == sorted(it.meta["numbers"], reverse=True)
    assert sum(a.question != b.question for a, b in zip(given, ordered)) > 10
    # The settings name the order only when it is not the default, so earlier runs resume unchanged.
    assert "question_order" not in load_task("countdown").settings()
    assert load_task("countdown", question_order="sorted").settings()["question_order"] == "sorted"
    # A file's own question text is re-rendered in sorted order.
    p = tmp_path / "cd.jsonl"
    p.write_text(json.dumps({"id": "a", "numbers": [3, 5, 7, 2], "target": 24, "question": "make 24 from 3 5 7 2"}) + "\n")
    assert load_task("countdown", p).load()[0].question == "make 24 from 3 5 7 2"
    (item,) = load_task("countdown", p, question_order="sorted").load()
    assert item.question == "Using the numbers [7, 5, 3, 2], create an equation that equals 24."
    with pytest.raises(ValueError, match="question_order must be one of"):
        load_task("countdown", question_order="shuffled")


def test_countdown_grading_checks_the_boxed_expression(tmp_path):
    pytest.importorskip("sprint.tasks.countdown")
    p = tmp_path / "cd.jsonl"
    p.write_text(json.dumps({"id": "a", "numbers": [3, 5, 7, 2], "target": 24}) + "\n")
    task = load_task("countdown", p)
    (item,) = task.load()
    assert item.id == "a" and item.meta == {"numbers": [3, 5, 7, 2], "target": 24}
    assert item.question == "Using the numbers [3, 5, 7, 2], create an equation that equals 24."
    asked = render_question(item.question) + "\n\n"
    g = task.grade(asked + render_final_answer("So \\boxed{7 * 3 + 5 - 2}"), item)
    assert (g.answer, g.correct, g.status) == ("7 * 3 + 5 - 2", True, "correct")
    assert task.grade(asked + "\\boxed{7 * 3 + 5 - 2 = 24}", item).correct
    g = task.grade(asked + render_final_answer("\\boxed{(7 + 5) * 2}"), item)  # 3 is not used
    assert (g.correct, g.status) == (False, "wrong")
    assert task.grade(asked + "\\boxed{7 * 3 + 5 - 2 = 25}", item).status == "wrong"
    assert task.grade(asked + "I give up.", item).status == "no_answer"
    assert task.grade("7 * 3 + 5 - 2", item).correct  # a bare expression as the whole answer
    p.write_text(json.dumps({"id": "a", "numbers": [3, 5]}) + "\n")
    with pytest.raises(ValueError, match="item 1: missing field 'target'"):
        task.load()
