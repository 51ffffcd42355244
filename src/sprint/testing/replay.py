"""Replaying a finished SPRINT trajectory through the orchestrator: a `ScriptedSprintModel` that writes exactly
the trajectory's plans, executions and final answer (with the closing tags a real model writes and the stop strings
cut). A faithful orchestrator reproduces the trajectory byte for byte; benchmarks use it as a realistic workload."""

from __future__ import annotations

from sprint.format import incremental as F
from sprint.format.trajectory import Trajectory, render_execution, render_final_answer, render_plan
from sprint.testing.scripted import ScriptedSprintModel


def replay_model(traj: Trajectory, **kw) -> ScriptedSprintModel:
    """The scripted model that writes `traj` (stage 1's plan opening is written by the orchestrator)."""
    planner = []
    executions = {}
    for n, stage in enumerate(traj.stages, start=1):
        text = render_plan(stage)
        planner.append(text[len(F.plan_opening(stage.index)):] if n == 1 else text)
        for e in stage.executions:
            executions[e.id] = render_execution(e)[len(F.find_tags(render_execution(e))[0].text) + 1:]
    final = render_final_answer(traj.final_answer or "")
    planner.append(final)
    return ScriptedSprintModel(planner, executions, final_answer=final[len(F.final_answer_opening()):], **kw)
