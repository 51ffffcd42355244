"""The eval runner: summaries with Wilson intervals, durable results, settings, resume after a crash."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sprint.backends.base import GenerationParams, ScriptedBackend
from sprint.eval.grading import GradeResult, extract_answer
from sprint.eval.runner import (RESULTS, SETTINGS, SUMMARY, ResultLog, SubRun, environment_info, resume_records,
                                run_labels, run_many, run_subrun, summarize, summary_table, wilson_interval)
from sprint.eval.tasks import TaskItem
from sprint.format.trajectory import render_final_answer, render_question


class ExactTask:
    """A task graded by exact match of the boxed answer (no math-verify: keeps these tests fast)."""

    name = "exact"

    def __init__(self, n: int):
        self.items = [TaskItem(f"q{i:03d}", f"What is {i} + {i}?", str(2 * i), {"level": 1 + i % 5})
                      for i in range(n)]

    def load(self, n=None, seed=None):
        return self.items[:n] if n else self.items

    def grade(self, output, item):
        ans = extract_answer(output)
        ok = ans == item.gold
        return GradeResult(ans, ok, "no_answer" if ans is None else "correct" if ok else "wrong")

    def settings(self):
        return {"task": self.name}


def model_answer(question: str) -> str:
    """The scripted model: right on most items, wrong on every 4th, silent on every 7th."""
    i = int(question.split()[2])
    if i % 7 == 3:
        return "I do not know."
    return render_final_answer(f"\\boxed{{{2 * i + (1 if i % 4 == 1 else 0)}}}")


def scripted_solver(delay_s: float = 0.0, fail_on: set[int] = frozenset()):
    backend = ScriptedBackend(model_answer, delay_s=delay_s)

    async def solve(question: str) -> dict:
        if int(question.split()[2]) in fail_on:
            raise RuntimeError("backend went away")
        comp = await backend.generate(question, GenerationParams(max_tokens=100))
        n = comp.generated_tokens
        # A deterministic wall-clock, so that interrupted and uninterrupted runs must agree exactly.
        return {"trajectory": render_question(question) + "\n\n" + comp.text, "sequential_tokens": n,
                "total_tokens": 2 * n, "wall_clock_s": 0.5 + n / 100, "calls": []}

    return solve


def sub(tmp_path: Path, solve, label="m-sprint") -> SubRun:
    return SubRun(label=label, method="sprint", model="m", out_dir=tmp_path, solve=solve,
                  settings={"model": "m", "method": "sprint", "decoding": {"temperature": 0.0}})


def run(task, out, solve, n=None, concurrency=4, **kw):
    return asyncio.run(run_subrun(task, task.load(n), sub(out, solve), concurrency=concurrency,
                                  settings={"task": task.settings()}, progress=False, **kw))


# ---------------------------------------------------------------------------------------------- statistics
def test_wilson_interval_known_values():
    lo, hi = wilson_interval(5, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.2366, 0.7634)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and round(hi, 4) == 0.2775
    lo, hi = wilson_interval(10, 10)
    assert round(lo, 4) == 0.7225 and hi == pytest.approx(1.0)
    assert all(map(lambda x: x != x, wilson_interval(0, 0)))  # nan for no data


def test_summarize_counts_no_answer_and_errors_as_wrong():
    recs = [{"id": "a", "correct": True, "answer": "1", "sequential_tokens": 10, "total_tokens": 20,
             "wall_clock_s": 1.0},
            {"id": "b", "correct": False, "answer": None, "sequential_tokens": 30, "total_tokens": 40,
             "wall_clock_s": 3.0},
            {"id": "c", "correct": False, "answer": None, "error": "boom", "wall_clock_s": 0.1}]
    s = summarize(recs, n_expected=4)
    assert s["n"] == 3 and s["correct"] == 1 and s["accuracy"] == pytest.approx(1 / 3)
    assert s["no_answer"] == 2 and s["errors"] == 1 and s["complete"] is False
    assert s["mean_sequential_tokens"] == 20 and s["median_total_tokens"] == 30
    assert s["mean_wall_clock_s"] == pytest.approx(4.1 / 3)
    assert s["accuracy_ci95"] == list(wilson_interval(1, 3))


# ---------------------------------------------------------------------------------------------- results file
def test_result_log_tolerates_a_truncated_last_line_only(tmp_path):
    log = ResultLog(tmp_path / RESULTS)
    log.append({"id": "a", "correct": True})
    log.append({"id": "b", "correct": False})
    with open(log.path, "a") as f:
        f.write('{"id": "c", "corr')
    assert [r["id"] for r in log.read()] == ["a", "b"]
    assert [r["id"] for r in resume_records(log)] == ["a", "b"]
    assert log.path.read_text().endswith("\n")  # cleaned, so the next append starts on its own line
    log.path.write_text('{"id": "a"}\n{broken\n{"id": "b"}\n')
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        log.read()
    log.path.write_text('{"id": "a"}\n[1, 2]\n')
    with pytest.raises(ValueError, match="line 2 is not a result record"):
        log.read()


def test_result_log_reads_a_gzipped_copy_the_same_way(tmp_path):
    import gzip

    path = tmp_path / "results.jsonl.gz"
    path.write_bytes(gzip.compress('{"id": "a", "x": "é"}\n\n{"id": "b"}\n{"id": "c", "cut'.encode()))
    assert [r["id"] for r in ResultLog(path).read()] == ["a", "b"]   # the cut-off last line tolerated, as plain
    path.write_bytes(gzip.compress(b'{"id": "a"}\n{broken\n{"id": "b"}\n'))
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        ResultLog(path).read()


# ---------------------------------------------------------------------------------------------- runs
def test_run_writes_results_settings_and_summary(tmp_path):
    task = ExactTask(14)
    s = run(task, tmp_path, scripted_solver())
    recs = ResultLog(tmp_path / RESULTS).read()
    assert sorted(r["id"] for r in recs) == [it.id for it in task.items]
    by_id = {r["id"]: r for r in recs}
    assert by_id["q002"]["correct"] and by_id["q002"]["answer"] == "4" and by_id["q002"]["meta"] == {"level": 3}
    assert by_id["q001"]["status"] == "wrong" and by_id["q003"]["status"] == "no_answer"
    # 14 items: 3 and 10 give no answer; 1, 5, 9, 13 are wrong; the rest (8) are right.
    assert (s["n"], s["correct"], s["no_answer"], s["errors"]) == (14, 8, 2, 0)
    assert s["accuracy"] == pytest.approx(8 / 14) and s["complete"]
    assert json.loads((tmp_path / SUMMARY).read_text()) == s
    settings = json.loads((tmp_path / SETTINGS).read_text())
    assert settings["model"] == "m" and settings["decoding"] == {"temperature": 0.0}
    assert settings["task"] == {"task": "exact"} and settings["label"] == "m-sprint"


def test_environment_info_names_python_packages_and_hardware():
    env = environment_info()
    assert env["python"] == sys.version.split()[0]
    assert "sprint-reasoning" in env["packages"] and "transformers" in env["packages"]
    assert env["cpu"] and env["cpu_count"] >= 1 and isinstance(env["gpus"], list)
    assert env["git"] is None or len(env["git"]["commit"]) == 40


def test_resume_after_cancel_mid_run_gives_the_same_summary(tmp_path):
    task = ExactTask(20)
    full = run(task, tmp_path / "full", scripted_solver())

    async def interrupted():
        job = asyncio.ensure_future(run_subrun(task, task.items, sub(tmp_path / "cut", scripted_solver(0.05)),
                                               concurrency=3, settings={"task": task.settings()}, progress=False))
        while not (tmp_path / "cut" / RESULTS).exists() or len((tmp_path / "cut" / RESULTS).read_text()
                                                               .splitlines()) < 5:
            await asyncio.sleep(0.01)
        job.cancel()
        with pytest.raises(asyncio.CancelledError):
            await job

    asyncio.run(interrupted())
    first = ResultLog(tmp_path / "cut" / RESULTS).read()
    assert 5 <= len(first) < 20
    with open(tmp_path / "cut" / RESULTS, "a") as f:  # and a crash in the middle of a write
        f.write('{"id": "q019", "answer": "3')
    calls = []
    solver = scripted_solver()

    async def counting(question):
        calls.append(question)
        return await solver(question)

    resumed = run(task, tmp_path / "cut", counting)
    ids = [r["id"] for r in ResultLog(tmp_path / "cut" / RESULTS).read()]
    assert len(ids) == len(set(ids)) == 20
    assert len(calls) == 20 - len(first)  # finished items were not solved again
    assert resumed == full
    settings = json.loads((tmp_path / "cut" / SETTINGS).read_text())
    assert len(settings["resumes"]) == 1


def test_failed_items_are_recorded_then_retried_on_resume(tmp_path):
    task = ExactTask(8)
    s = run(task, tmp_path, scripted_solver(fail_on={2, 5}))
    assert s["errors"] == 2 and s["n"] == 8 and s["correct"] == 4
    errs = [r for r in ResultLog(tmp_path / RESULTS).read() if r.get("error")]
    assert {r["id"] for r in errs} == {"q002", "q005"} and "backend went away" in errs[0]["error"]
    s2 = run(task, tmp_path, scripted_solver())
    assert s2["errors"] == 0 and s2["correct"] == 5
    ids = [r["id"] for r in ResultLog(tmp_path / RESULTS).read()]
    assert sorted(ids) == [it.id for it in task.items]


def test_resume_refuses_other_settings(tmp_path):
    task = ExactTask(3)
    run(task, tmp_path, scripted_solver())
    other = sub(tmp_path, scripted_solver())
    other.settings["decoding"] = {"temperature": 0.7}
    with pytest.raises(ValueError, match=r"decoding.temperature \(0.0 -> 0.7\)"):
        asyncio.run(run_subrun(task, task.items, other, settings={"task": task.settings()}, progress=False))


def test_concurrency_overlaps_items(tmp_path):
    task = ExactTask(8)
    t0 = time.perf_counter()
    run(task, tmp_path, scripted_solver(delay_s=0.2), concurrency=8)
    assert time.perf_counter() - t0 < 1.0  # 8 items of 0.2 s each, all at once


def test_several_pairs_side_by_side(tmp_path):
    task = ExactTask(6)
    labels = run_labels([("models/countdown-sprint", "sprint"), ("countdown-sequential", "sequential"),
                         ("models/countdown-sprint/", "sprint")])
    assert labels == ["countdown-sprint-sprint", "countdown-sequential-sequential", "countdown-sprint-sprint-2"]
    runs = [SubRun(label, "sprint", "m", tmp_path / label, scripted_solver(), {"model": label})
            for label in labels[:2]]
    combined = asyncio.run(run_many(task, task.items, runs, out_dir=tmp_path, concurrency=2,
                                    settings={"task": task.settings()}, progress=False))
    assert [s["label"] for s in combined["runs"]] == labels[:2]
    assert all((tmp_path / label / RESULTS).exists() for label in labels[:2])
    table = (tmp_path / "summary.md").read_text()
    assert table == summary_table(combined["runs"]) and table.count("\n") == 4
    assert "| countdown-sprint-sprint | sprint | m | 6 |" in table


CRASH_SCRIPT = textwrap.dedent("""
    import asyncio, sys
    sys.path.insert(0, {tests!r})
    from test_runner import ExactTask, scripted_solver, sub
    from sprint.eval.runner import run_subrun
    task = ExactTask(12)
    asyncio.run(run_subrun(task, task.items, sub(__import__("pathlib").Path({out!r}), scripted_solver({delay})),
                           concurrency=2, settings={{"task": task.settings()}}, progress=False))
""")


def test_resume_after_the_process_is_killed(tmp_path):
    out = tmp_path / "run"
    script = CRASH_SCRIPT.format(tests=str(Path(__file__).parent), out=str(out), delay=0.3)
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:
        if (out / RESULTS).exists() and len((out / RESULTS).read_text().splitlines()) >= 3:
            break
        if proc.poll() is not None:
            pytest.fail(proc.stderr.read().decode())
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = len(ResultLog(out / RESULTS).read())
    assert 3 <= before < 12
    resumed = run(ExactTask(12), out, scripted_solver(), concurrency=2)
    ids = [r["id"] for r in ResultLog(out / RESULTS).read()]
    assert len(ids) == len(set(ids)) == 12
    assert resumed == run(ExactTask(12), tmp_path / "clean", scripted_solver())


def test_resume_adds_the_missing_newline_before_appending(tmp_path):
    from sprint.eval.runner import ResultLog, resume_records

    log = ResultLog(tmp_path / "results.jsonl")
    log.path.write_text('{"id": "a", "correct": true}\n{"id": "b", "correct": false}', encoding="utf-8")
    assert [r["id"] for r in resume_records(log)] == ["a", "b"]
    log.append({"id": "c", "correct": True})
    assert [r["id"] for r in log.read()] == ["a", "b", "c"]


def test_bundled_models_get_their_limits_unless_overridden():
    from sprint.eval.runner import EvalConfig, solver_configs

    cfg = EvalConfig(task="countdown", methods=["sprint"], out="unused")
    sp, _ = solver_configs(cfg, "sprint", "countdown-sprint")
    assert sp.max_exec_tokens == 512 and sp.max_plan_tokens == 384
    _, bl = solver_configs(cfg, "sequential", "countdown-sequential")
    assert bl.max_tokens == 4000
    sp, _ = solver_configs(cfg, "sprint", "/some/model")
    assert sp.max_exec_tokens == 8000
    cfg = EvalConfig(task="countdown", methods=["sprint"], out="unused", overrides={"sprint.max_exec_tokens": "100"})
    sp, _ = solver_configs(cfg, "sprint", "countdown-sprint")
    assert sp.max_exec_tokens == 100
