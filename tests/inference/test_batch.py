"""run_batch: results appended as they finish, resume after a crash without duplicates, bad input named by line."""

from __future__ import annotations

import asyncio
import json

import pytest

from sprint.backends.base import ScriptedBackend
from sprint.inference import SprintConfig, solve
from sprint.inference.batch import BatchItem, finished_ids, load_items, run_batch
from sprint.testing.scripted import ScriptedSprintModel

PLAN = "Go.\n<prompt_1.1> A. </prompt_1.1>\n</Plan_1>"
FINAL = "<Final_answer>\n\\boxed{1}\n</Final_answer>"


def items(n):
    return [BatchItem(f"id-{k}", f"Question {k}?", k + 1) for k in range(n)]


def solver(delay=0.05):
    model = ScriptedSprintModel([PLAN, FINAL], {"1.1": "done"}, delays={"planner": delay, "executor": delay})
    backend = ScriptedBackend(model, delay_s=model.delay)

    async def one(item):
        return await solve(item.question, backend, SprintConfig(), id=item.id)

    return one


def read_ids(path):
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_cancel_mid_run_then_resume_finishes_everything_once(tmp_path):
    out = tmp_path / "results.jsonl"

    async def crash_after_some():
        task = asyncio.create_task(run_batch(items(12), solver(), out, concurrency=3, progress=False))
        while not out.exists() or len(out.read_text().splitlines()) < 4:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(crash_after_some())
    first = read_ids(out)
    assert 4 <= len(first) < 12 and len(set(first)) == len(first)
    summary = asyncio.run(run_batch(items(12), solver(), out, concurrency=3, progress=False))
    ids = read_ids(out)
    assert sorted(ids) == sorted(f"id-{k}" for k in range(12))
    assert summary.skipped == len(first) and summary.done == 12 - len(first) and not summary.failed
    again = asyncio.run(run_batch(items(12), solver(), out, concurrency=3, progress=False))
    assert again.done == 0 and again.skipped == 12 and read_ids(out) == ids


def test_truncated_last_line_is_dropped_and_redone(tmp_path):
    out = tmp_path / "results.jsonl"
    asyncio.run(run_batch(items(2), solver(0), out, progress=False))
    with out.open("a") as f:
        f.write('{"id": "id-2", "trajectory": "cut of')
    assert finished_ids(out) == {"id-0", "id-1"}
    assert out.read_text().endswith("\n") and len(out.read_text().splitlines()) == 2
    asyncio.run(run_batch(items(3), solver(0), out, progress=False))
    assert sorted(read_ids(out)) == ["id-0", "id-1", "id-2"]


def test_complete_last_line_without_newline_is_kept(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text('{"id": "a"}\n{"id": "b"}')
    assert finished_ids(out) == {"a", "b"}
    assert out.read_text() == '{"id": "a"}\n{"id": "b"}\n'


def test_broken_line_in_the_middle_is_an_error_naming_the_line(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(ValueError, match=r"r.jsonl:2"):
        finished_ids(out)


def test_failed_items_are_reported_not_written(tmp_path):
    out = tmp_path / "r.jsonl"
    ok = solver(0)

    async def one(item):
        if item.id == "id-1":
            raise RuntimeError("boom")
        return await ok(item)

    summary = asyncio.run(run_batch(items(3), one, out, progress=False))
    assert summary.failed == [("id-1", "RuntimeError: boom")]
    assert sorted(read_ids(out)) == ["id-0", "id-2"]


def test_load_items_names_field_and_line(tmp_path):
    p = tmp_path / "in.jsonl"
    p.write_text('{"problem": "a", "unique_id": 1}\n\n{"problem": "b"}\n')
    with pytest.raises(ValueError, match=r"in.jsonl:3: no field 'unique_id'"):
        load_items(p)
    p.write_text('{"problem": "a", "unique_id": 1}\n{"problem": "b", "unique_id": 1}\n')
    with pytest.raises(ValueError, match=r"in.jsonl:2: id '1' already used on line 1"):
        load_items(p)
    p.write_text('{"q": "a", "k": "x"}\n')
    assert load_items(p, "q", "k") == [BatchItem("x", "a", 1)]
    with pytest.raises(ValueError, match=r"in.jsonl:1: no field 'problem' \(fields: q, k; choose with --question-field"):
        load_items(p)


def test_load_items_finds_the_common_field_names(tmp_path):
    p = tmp_path / "in.jsonl"
    p.write_text('{"id": "a", "question": "Using the numbers [1, 2, 3, 4], create an equation that equals 10."}\n'
                 '{"id": "b", "question": "What is 2 + 2?"}\n')
    assert [(it.id, it.question[:4]) for it in load_items(p)] == [("a", "Usin"), ("b", "What")]
    p.write_text('{"prompt": "x", "unique_id": 3, "id": "ignored"}\n')
    assert load_items(p) == [BatchItem("3", "x", 1)]
    # The field is chosen on the first line; every later line must have it.
    p.write_text('{"question": "x", "id": 1}\n{"problem": "y", "id": 2}\n')
    with pytest.raises(ValueError, match=r"in.jsonl:2: no field 'question'"):
        load_items(p)


def test_load_items_reads_math500(shared_dir):
    got = load_items(shared_dir / "data" / "math500.jsonl")
    assert len(got) == 500 and got[0].id and got[0].question
