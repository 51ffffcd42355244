"""The records a run produces: one `CallRecord` per model call and one `RunResult` per question, with their JSON.

`RunResult.to_dict()` is the line written to `--out`; its required keys are `id`, `trajectory`, `answer`,
`sequential_tokens`, `total_tokens`, `wall_clock_s`, `repairs` and `calls` (each call: role, stage, prompt_id,
prompt_tokens, generated_tokens, ttft_s, start_s, end_s; times in seconds from the start of the question).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Sequence


@dataclass
class CallRecord:
    """One model call. Roles: planner, executor, final_answer (a forced answer), and for baselines sequential,
    sample, skeleton, point, answer. `dispatch_tokens` (executors only) is how many tokens the stage's planner had
    written when this executor started: the executor's place on the critical path. `prompt_tokens` is the backend's
    count, or where it gave none (a call cut short) the prompt tokenized after the run (0 until then)."""

    role: str
    stage: int | None
    prompt_id: str | None
    start_s: float
    prompt_tokens: int = 0
    generated_tokens: int = 0
    ttft_s: float | None = None
    end_s: float | None = None
    attempt: int = 1
    finish_reason: str | None = None
    error: str | None = None
    dispatch_tokens: int | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("start_s", "end_s", "ttft_s"):
            if d[k] is not None:
                d[k] = round(d[k], 6)
        return d


@dataclass
class RunResult:
    """The outcome of one question under one method."""

    id: str | None
    question: str
    method: str
    trajectory: str
    answer: str | None
    sequential_tokens: int
    critical_path_tokens: int
    total_tokens: int
    generated_tokens: int
    wall_clock_s: float
    stages: int = 0
    repairs: list[dict] = field(default_factory=list)
    calls: list[CallRecord] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["calls"] = [c.to_dict() for c in self.calls]
        d["wall_clock_s"] = round(self.wall_clock_s, 6)
        return d

    def to_json(self) -> str:
        """One line of JSON (what `--out` holds per question)."""
        return json.dumps(self.to_dict(), ensure_ascii=False)


class BackendTokenCounter:
    """A format `TokenCounter` that counts with the backend's own tokenizer (so metrics match what was run)."""

    def __init__(self, backend):
        self.backend = backend

    def __call__(self, texts: Sequence[str]) -> list[int]:
        return [self.backend.count_tokens(t) if t else 0 for t in texts]


def critical_path_tokens(calls: Sequence[CallRecord]) -> int:
    """Generated tokens on the longest chain of calls as they actually ran.

    Within a stage: the planner's tokens, or for an executor the planner tokens written when it was dispatched plus
    the executor's own tokens (all its attempts; they ran one after another), whichever is longest. Stages and
    calls outside stages (forced final answers, baseline calls without parallelism) add up; calls of the same role
    and stage with different prompt ids (self-consistency samples, skeleton points) run in parallel.
    """
    by_stage: dict[object, list[CallRecord]] = defaultdict(list)
    for c in calls:
        by_stage[(c.role, c.stage) if c.role not in ("planner", "executor") else ("stage", c.stage)].append(c)
    total = 0
    for key, group in by_stage.items():
        if key[0] == "stage":
            planner = sum(c.generated_tokens for c in group if c.role == "planner")
            chains: dict[str | None, int] = defaultdict(int)
            starts: dict[str | None, int] = {}
            for c in group:
                if c.role == "executor" and c.error != "cancelled":
                    chains[c.prompt_id] += c.generated_tokens
                    starts[c.prompt_id] = max(starts.get(c.prompt_id, 0), c.dispatch_tokens or 0)
            total += max([planner] + [starts[k] + v for k, v in chains.items()])
        else:
            per_id: dict[str | None, int] = defaultdict(int)
            for c in group:
                per_id[c.prompt_id] += c.generated_tokens
            total += max(per_id.values())
    return total
