"""Orchestrator behaviour with the scripted backend: dispatch order, executor contexts, repairs, limits, failures."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from sprint.backends.base import ScriptedBackend
from sprint.format import parse
from sprint.inference import SprintConfig, solve
from sprint.testing.scripted import ScriptedSprintModel, call_kind

Q = "What is 2+3+4*5?"
START = "<Question>\nWhat is 2+3+4*5?\n</Question>\n\n<think>\n"
PLAN1 = ("First split the work.\n\n<prompt_1.1> Compute 2+3. </prompt_1.1>\n\nAlso:\n\n"
         "<prompt_1.2> Compute 4*5. </prompt_1.2>\n\nAnd a third part.\n\n<prompt_1.3> Compute 1+1. </prompt_1.3>\n"
         "Then we add the parts up.\n</Plan_1>")
PLAN2 = "<Plan_2>\nBased on execution_1.1, execution_1.2:\nCombine them: 5 + 20 = 25.\n</Plan_2>"
FINAL = "<Final_answer>\nThe answer is \\boxed{25}.\n</Final_answer>"
EXECS = {"1.1": "2+3 = 5.\n</execution_1.1>", "1.2": "4*5 = 20.\n</execution_1.2>",
         "1.3": "1+1 = 2.\n</execution_1.3>"}


def fast_config(**kw) -> SprintConfig:
    kw.setdefault("retry_backoff_s", 0.0)
    return SprintConfig(**kw)


def make(planner=(PLAN1, PLAN2, FINAL), executions=EXECS, delays=None, **kw):
    model = ScriptedSprintModel(list(planner), executions, delays=delays, **kw)
    return ScriptedBackend(model, delay_s=model.delay, chunk=4)


def run(backend, **cfg):
    return asyncio.run(solve(Q, backend, fast_config(**cfg)))


def calls_of(result, role):
    return [c for c in result.calls if c.role == role]


def executor_prompts(backend):
    return {call_kind(p)[2]: p for p, _ in backend.calls if call_kind(p)[0] == "executor"}


# ---------------------------------------------------------------------------------------------- dispatch
def test_eager_dispatch_starts_executors_while_planner_streams():
    backend = make(delays={"planner": 0.6, "executor": 0.05})
    r = run(backend)
    planner = calls_of(r, "planner")[0]
    ex = {c.prompt_id: c for c in calls_of(r, "executor")}
    # Executor 1.1 starts while the planner is still writing (its prompt closes about a third into the plan).
    assert ex["1.1"].start_s < planner.end_s - 0.2
    assert ex["1.1"].start_s < ex["1.2"].start_s < ex["1.3"].start_s < planner.end_s
    # The planner's tokens at dispatch grow with the prompt number and stay below the whole plan.
    assert ex["1.1"].dispatch_tokens < ex["1.2"].dispatch_tokens < ex["1.3"].dispatch_tokens < planner.generated_tokens
    assert not r.repairs


def test_no_eager_waits_for_the_whole_plan():
    backend = make(delays={"planner": 0.3})
    r = run(backend, eager=False)
    planner = calls_of(r, "planner")[0]
    for c in calls_of(r, "executor"):
        assert c.start_s >= planner.end_s
        assert c.dispatch_tokens == planner.generated_tokens


def test_eager_and_no_eager_send_identical_bytes():
    eager, lazy = make(delays={"planner": 0.1}), make(delays={"planner": 0.1})
    r1, r2 = run(eager), run(lazy, eager=False)
    assert sorted(p for p, _ in eager.calls) == sorted(p for p, _ in lazy.calls)
    assert r1.trajectory == r2.trajectory
    # Eager dispatch puts less on the critical path: each executor starts when its prompt closes.
    assert r1.critical_path_tokens < r2.critical_path_tokens


def test_executor_context_is_plan_cut_after_own_prompt_then_training_block_opening():
    backend = make()
    r = run(backend)
    prompts = executor_prompts(backend)
    plan_head = START + "<Plan_1>\nFirst split the work.\n\n<prompt_1.1> Compute 2+3. </prompt_1.1>"
    assert prompts["1.1"] == plan_head + "\n</Plan_1>\n\n<Execution_1>\n<execution_1.1>\n"
    assert prompts["1.2"] == (plan_head + "\n\nAlso:\n\n<prompt_1.2> Compute 4*5. </prompt_1.2>"
                              "\n</Plan_1>\n\n<Execution_1>\n<execution_1.2>\n")
    # The planner's input at stage 2 is byte-identical to the start of the rendered trajectory.
    planner_inputs = [p for p, _ in backend.calls if call_kind(p)[0] == "planner"]
    assert planner_inputs[0] == START + "<Plan_1>\n"
    assert planner_inputs[1].endswith("</Execution_1>\n\n")
    assert r.trajectory.startswith(planner_inputs[1])
    assert r.trajectory.startswith(planner_inputs[2])


def test_executor_context_uses_the_chat_template_prefix():
    class Tok:
        chat_template = "x"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            return "<|user|>" + messages[1]["content"] + "<|assistant|><think>\n"

    backend = make()
    asyncio.run(solve(Q, backend, fast_config(), tokenizer=Tok()))
    first = backend.calls[0][0]
    assert first == "<|user|>" + Q + "<|assistant|><think>\n<Plan_1>\n"
    assert executor_prompts(backend)["1.1"].startswith("<|user|>" + Q + "<|assistant|><think>\n<Plan_1>\nFirst")


def test_results_appended_in_prompt_order_whatever_order_executors_finish():
    backend = make(delays={"1.1": 0.4, "1.2": 0.0, "1.3": 0.2})
    r = run(backend)
    ex = {c.prompt_id: c for c in calls_of(r, "executor")}
    assert ex["1.2"].end_s < ex["1.3"].end_s < ex["1.1"].end_s  # finished in reverse-ish order
    traj = parse(r.trajectory)
    assert [e.id for e in traj.stages[0].executions] == ["1.1", "1.2", "1.3"]
    assert [e.text for e in traj.stages[0].executions] == ["2+3 = 5.", "4*5 = 20.", "1+1 = 2."]
    assert traj.ok and r.answer == "25"


@pytest.mark.parametrize("delays", [{"1.1": 0.0, "1.2": 0.1, "1.3": 0.2}, {"1.1": 0.2, "1.2": 0.0, "1.3": 0.1}])
def test_each_execution_but_the_stages_last_is_given_to_the_backend_as_it_finishes(delays):
    """A backend with `prepare_prompt` is handed each execution as it finishes, in the order they finish, but not
    the stage's last (the next planner prompt follows at once): each text is part of the next planner prompt, and
    prompts themselves are unchanged."""
    backend = make(delays=delays)
    prepared = []
    backend.prepare_prompt = prepared.append
    r = run(backend)
    planner = [p for p, _ in backend.calls if call_kind(p)[0] == "planner"]
    assert r.answer == "25" and len(planner) == 3
    assert all(t in planner[1] and t not in planner[0] for t in prepared)
    finished = sorted(delays, key=delays.get)
    assert [t.split("</execution_", 1)[1] for t in prepared] == [f"{j}>" for j in finished[:-1]]
    assert r.trajectory == run(make(delays=delays)).trajectory


def test_plan_without_prompts_continues_to_next_stage():
    r = run(make(planner=("Just think.\n</Plan_1>", FINAL), executions={}))
    traj = parse(r.trajectory)
    assert traj.ok
    assert len(traj.stages) == 1 and traj.stages[0].executions == [] and traj.stages[0].execution_block
    assert "No prompt to execute." in r.trajectory
    assert r.answer == "25" and not calls_of(r, "executor")


# ---------------------------------------------------------------------------------------------- repairs
def test_misnumbered_prompts_are_renumbered_and_recorded():
    plan = "Two parts.\n<prompt_3.1> A. </prompt_3.1>\n<prompt_1.5> B. </prompt_1.7>\n</Plan_1>"
    backend = make(planner=(plan, FINAL), executions={"1.1": "a", "1.2": "b"})
    r = run(backend)
    kinds = [x["kind"] for x in r.repairs]
    assert kinds.count("renumbered_prompt") == 2
    assert "misnumbered_close" in kinds
    assert all(x["stage"] == 1 for x in r.repairs)
    assert set(executor_prompts(backend)) == {"1.1", "1.2"}
    assert "<prompt_1.2> B. </prompt_1.2>" in executor_prompts(backend)["1.2"]
    traj = parse(r.trajectory)
    assert traj.ok, traj.diagnostics
    assert [p.id for p in traj.prompts] == ["1.1", "1.2"]


def test_planner_writing_executions_is_cut_and_its_prompts_still_run():
    plan = ("Go.\n<prompt_1.1> A. </prompt_1.1>\n</Plan_3>\n<Execution_1>\n<execution_1.1>\nmade up\n"
            "</execution_1.1>\n" + "blah " * 200)
    backend = make(planner=(plan, FINAL), executions={"1.1": "real result"}, delays={"planner": 0.2})
    r = run(backend)
    kinds = [x["kind"] for x in r.repairs]
    assert kinds == ["misnumbered_plan_close"]
    assert "made up" not in r.trajectory and "real result" in r.trajectory
    planner = calls_of(r, "planner")[0]
    assert planner.finish_reason == "repair_stop"  # the stream was closed at the bad tag, not run to the end
    assert planner.generated_tokens < 20
    assert planner.prompt_tokens == backend.count_tokens(backend.calls[0][0]) > 0   # counted after the run
    assert parse(r.trajectory).ok


def test_planner_writing_execution_tags_inside_plan():
    plan = "Go.\n<prompt_1.1> A. </prompt_1.1>\n<execution_1.1>\nmade up\n</execution_1.1>\n</Plan_1>"
    r = run(make(planner=(plan, FINAL), executions={"1.1": "real"}))
    assert [x["kind"] for x in r.repairs] == ["planner_wrote_executions"]
    assert "made up" not in r.trajectory and parse(r.trajectory).ok


def test_misnumbered_and_missing_plan_tags_later_stages():
    turns = (PLAN1, "<Plan_7>\nCombine.\n</Plan_2>", "no tags at all, just text", FINAL)
    r = run(make(planner=turns))
    kinds = [x["kind"] for x in r.repairs]
    assert "misnumbered_plan" in kinds and "missing_plan_tag" in kinds
    traj = parse(r.trajectory)
    assert traj.ok and [s.index for s in traj.stages] == [1, 2, 3]
    assert "no tags at all" in traj.stages[2].plan.text


def test_executor_writing_tags_is_cut():
    execs = dict(EXECS, **{"1.2": "20.\n</execution_1.9>\n<execution_1.3>\nsteal the next one"})
    r = run(make(executions=execs))
    assert [x["kind"] for x in r.repairs] == ["executor_wrote_tags"]
    assert parse(r.trajectory).stages[0].executions[1].text == "20."


def test_never_answering_model_gets_a_forced_final_answer_at_max_stages():
    turns = {i: f"<Plan_{i}>\nStill thinking {i}.\n</Plan_{i}>" for i in range(2, 10)}
    turns[1] = "Still thinking 1.\n</Plan_1>"
    model = ScriptedSprintModel(turns, {}, final_answer="So \\boxed{7}.\n</Final_answer>")
    backend = ScriptedBackend(model)
    r = asyncio.run(solve(Q, backend, fast_config(max_stages=4)))
    assert r.stages == 3
    kinds = [x["kind"] for x in r.repairs]
    assert kinds == ["max_stages", "forced_final_answer"]
    assert backend.calls[-1][0].endswith("</Execution_3>\n\n<Final_answer>\n")
    assert r.answer == "7" and r.meta["forced_final_answer"]
    assert parse(r.trajectory).ok
    assert [c.role for c in r.calls] == ["planner"] * 3 + ["final_answer"]


def test_max_stages_one_goes_straight_to_final_answer():
    model = ScriptedSprintModel([], {}, final_answer="\\boxed{1}")
    r = asyncio.run(solve(Q, ScriptedBackend(model), fast_config(max_stages=1)))
    assert r.stages == 0 and r.answer == "1"


def test_empty_planner_turn_forces_the_answer():
    r = run(make(planner=("",), final_answer="\\boxed{3}"))
    assert [x["kind"] for x in r.repairs] == ["empty_plan", "forced_final_answer"]
    assert r.answer == "3"


# ---------------------------------------------------------------------------------------------- limits
def test_runaway_generations_are_cut_at_max_tokens():
    plan = "Go.\n<prompt_1.1> A. </prompt_1.1>\n" + "more " * 100
    execs = {"1.1": "word " * 100}
    r = run(make(planner=(plan, FINAL), executions=execs), max_plan_tokens=30, max_exec_tokens=10)
    cuts = [x for x in r.repairs if x["kind"] == "cut_at_max_tokens"]
    assert len(cuts) == 2
    ex = calls_of(r, "executor")[0]
    assert ex.generated_tokens == 10 and ex.finish_reason == "length"
    assert 30 <= calls_of(r, "planner")[0].generated_tokens < 40  # the double cuts at 30 space-separated words
    assert r.answer == "25"


def test_wall_clock_budget_stops_the_run_and_keeps_finished_work():
    backend = make(delays={"1.1": 0.05, "1.2": 5.0, "1.3": 5.0})
    t = time.perf_counter()
    r = run(backend, wall_clock_s=0.5)
    assert time.perf_counter() - t < 2.0
    assert r.repairs[-1]["kind"] == "wall_clock_budget"
    traj = parse(r.trajectory)
    assert [e.text for e in traj.stages[0].executions][0] == "2+3 = 5."
    assert "wall-clock budget" in traj.stages[0].executions[1].text
    assert r.answer is None and traj.final_answer is None
    cancelled = [c for c in calls_of(r, "executor") if c.error == "cancelled"]
    assert {c.prompt_id for c in cancelled} == {"1.2", "1.3"}
    assert all(c.end_s is not None for c in r.calls)


# ---------------------------------------------------------------------------------------------- failures
def test_executor_that_always_fails_is_recorded_and_the_stage_goes_on():
    model = ScriptedSprintModel([PLAN1, PLAN2, FINAL], EXECS)
    backend = ScriptedBackend(model, fail=lambda p: call_kind(p)[2] == "1.2")
    r = asyncio.run(solve(Q, backend, fast_config(executor_retries=2)))
    failed = [c for c in calls_of(r, "executor") if c.prompt_id == "1.2"]
    assert [c.attempt for c in failed] == [1, 2, 3]
    assert all("scripted failure" in c.error for c in failed)
    assert [x["kind"] for x in r.repairs] == ["executor_failed"]
    traj = parse(r.trajectory)
    assert traj.ok
    note = traj.stages[0].executions[1].text
    assert "did not run" in note and "3 attempt" in note
    assert r.answer == "25" and r.stages == 2


def test_executor_that_fails_once_is_retried():
    seen = []

    def flaky(prompt):
        if call_kind(prompt)[2] == "1.1" and not seen:
            seen.append(1)
            return True
        return False

    backend = ScriptedBackend(ScriptedSprintModel([PLAN1, PLAN2, FINAL], EXECS), fail=flaky)
    r = asyncio.run(solve(Q, backend, fast_config()))
    assert not r.repairs
    assert [(c.attempt, c.error is None) for c in calls_of(r, "executor") if c.prompt_id == "1.1"] == \
        [(1, False), (2, True)]


def test_planner_that_always_fails_does_not_crash():
    backend = ScriptedBackend(ScriptedSprintModel([PLAN1], EXECS), fail=lambda p: True)
    r = asyncio.run(solve(Q, backend, fast_config(planner_retries=1)))
    assert [x["kind"] for x in r.repairs] == ["planner_failed", "final_answer_failed"]
    assert r.answer is None and len(calls_of(r, "planner")) == 2


# ---------------------------------------------------------------------------------------------- records
def test_result_json_has_the_required_fields_and_times_are_relative():
    r = run(make())
    d = json.loads(r.to_json())
    for k in ("id", "trajectory", "answer", "sequential_tokens", "total_tokens", "wall_clock_s", "repairs", "calls",
              "critical_path_tokens"):
        assert k in d
    for c in d["calls"]:
        assert {"role", "stage", "prompt_id", "prompt_tokens", "generated_tokens", "ttft_s", "start_s",
                "end_s"} <= set(c)
        assert 0 <= c["start_s"] <= c["end_s"] <= d["wall_clock_s"] + 1e-3
    assert d["sequential_tokens"] < d["total_tokens"]


def test_seeds_differ_per_call_and_are_reproducible():
    backend = make()
    run(backend, seed=11, planner_temperature=0.7, executor_temperature=0.7)
    seeds = [p.seed for _, p in backend.calls]
    assert len(set(seeds)) == len(seeds)
    again = make()
    run(again, seed=11)
    assert seeds == [p.seed for _, p in again.calls]


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="max_stages"):
        SprintConfig(max_stages=0)
    with pytest.raises(ValueError, match="planner_top_p"):
        SprintConfig(planner_top_p=0)


def test_errors_that_cannot_change_are_not_retried():
    class TooLong(ScriptedBackend):
        def stream(self, prompt, params):
            if call_kind(prompt)[2] == "1.1":
                raise ValueError("prompt: 5000 tokens, the model's context is 2048")
            return super().stream(prompt, params)

    model = ScriptedSprintModel([PLAN1, PLAN2, FINAL], EXECS)
    r = asyncio.run(solve(Q, TooLong(model), fast_config(executor_retries=3)))
    failed = [c for c in calls_of(r, "executor") if c.prompt_id == "1.1"]
    assert len(failed) == 1 and "context is 2048" in failed[0].error
    assert "1 attempt" in parse(r.trajectory).stages[0].executions[0].text
