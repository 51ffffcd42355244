"""A scripted SPRINT "model" for `ScriptedBackend`: it recognises from the prompt whether it is asked to plan
stage i, execute prompt i.j or force a final answer, and answers from a script. Used by tests and benchmarks.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

from sprint.format import incremental as F
from sprint.format import tags as T


def call_kind(prompt: str) -> tuple[str, int, str | None]:
    """("planner", stage, None), ("executor", stage, "i.j") or ("final_answer", stage, None) for a SPRINT prompt."""
    if prompt.endswith(F.final_answer_opening()):
        return "final_answer", _stages_done(prompt) + 1, None
    tags = F.find_tags(prompt)
    if tags and F.is_open(tags[-1], T.EXECUTION) and prompt.endswith(tags[-1].text + "\n"):
        t = tags[-1]
        return "executor", t.stage, f"{t.stage}.{t.index}"
    return "planner", _stages_done(prompt) + 1, None


def _stages_done(prompt: str) -> int:
    return sum(1 for t in F.find_tags(prompt) if F.is_close(t, T.EXECUTION_BLOCK))


class ScriptedSprintModel:
    """Maps SPRINT prompts to scripted text.

    `planner[i-1]` (or `planner[i]` for a mapping) is what the planner writes at stage i (for stage 1 after the
    `<Plan_1>` opening the orchestrator writes); `executions["i.j"]` (or a callable `"i.j" -> text`) is executor
    i.j's output; `final_answer` answers a forced final answer. `delays` maps "planner", "final_answer" or an
    execution id to seconds (default 0), for `ScriptedBackend(delay_s=model.delay)`.
    """

    def __init__(self, planner: Sequence[str] | Mapping[int, str], executions: Mapping[str, str] | Callable[[str], str],
                 final_answer: str = "The answer is \\boxed{0}.", delays: Mapping[str, float] | None = None):
        self.planner = planner
        self.executions = executions
        self.final_answer = final_answer
        self.delays = dict(delays or {})

    def __call__(self, prompt: str) -> str:
        kind, stage, pid = call_kind(prompt)
        if kind == "final_answer":
            return self.final_answer
        if kind == "executor":
            return self.executions(pid) if callable(self.executions) else self.executions[pid]
        if isinstance(self.planner, Mapping):
            return self.planner[stage]
        if stage > len(self.planner):
            raise KeyError(f"ScriptedSprintModel: no planner turn scripted for stage {stage}")
        return self.planner[stage - 1]

    def delay(self, prompt: str) -> float:
        kind, _, pid = call_kind(prompt)
        return self.delays.get(pid if kind == "executor" else kind, self.delays.get(kind, 0.0))
