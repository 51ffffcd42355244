"""Packing extracted steps into SPRINT stages, and turning a packing into a `sprint.format.Trajectory`.

A step is one unit of a sequential trace: some planning text, optionally a subtask (prompt) whose execution text the
trace then carries out, and optional comment text. Steps come with a dependency DAG (`parents[id]` = ids of the
steps it builds on). Packing assigns every step a stage:

    stage(S) = 1                                                        without parents
    stage(S) = max over parents P of stage(P) + (1 if P has an execution else 0)

A plan-only parent does not push its child to a later stage: its text is planner text, already written when the
child is planned. An optional width W caps the prompts (executed steps) per stage: steps are placed in trace order,
and an executed step whose stage is full moves to the next stage with room; dependents follow, since their stage is
computed from the stages actually given to their parents.

Rendering follows the released SPRINT data byte for byte where it can (see `to_trajectory`). Every tag and marker
line is built with `sprint.format.tags`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

from sprint.format import tags as T
from sprint.format.trajectory import Execution, Plan, PlanPart, Prompt, Stage, Trajectory

#: Defaults of the released SPRINT curation: keep a trace when (steps with an execution) / stages >= 1.5 and it
#: has at most 11 stages (the release allows 12 phases counting the final answer).
DEFAULT_MIN_RATIO = 1.5
DEFAULT_MAX_STAGES = 11


@dataclass
class Step:
    """One extracted step of a trace. `prompt` and `execution` are None for a plan-only step.

    The optional line ranges (1-based, inclusive) say where the texts came from in the numbered trace; they are
    kept for reporting and for folding short executions (`fold_short_executions`).
    """

    id: int
    description: str = ""
    plan: str = ""
    prompt: str | None = None
    execution: str | None = None
    comment: str | None = None
    plan_lines: tuple[int, int] | None = None
    execution_lines: tuple[int, int] | None = None
    comment_lines: tuple[int, int] | None = None

    @property
    def has_execution(self) -> bool:
        # None marks a plan-only step; "" is an execution whose text is not loaded (ranges-only artifacts).
        return self.execution is not None


@dataclass
class Packing:
    """Stages of every step, the parallelism ratio and the keep/drop verdict of the filters.

    `reason` is None when kept, else "<code>: <detail>" with code one of `low_ratio`, `too_many_stages`, `no_steps`
    (the pipeline adds its own codes, for example `wrong_answer`).
    """

    stages: dict[int, int]
    num_stages: int
    executed: int
    ratio: float
    kept: bool
    reason: str | None = None
    width: int | None = None
    parents: dict[int, list[int]] = field(default_factory=dict)

    def execution_parents(self, step: Step, by_id: Mapping[int, Step]) -> list[int]:
        """Parents of `step` that have an execution in an earlier stage, in the DAG's order."""
        return [p for p in self.parents.get(step.id, [])
                if by_id[p].has_execution and self.stages[p] < self.stages[step.id]]

    def steps_in(self, stage: int, steps: Sequence[Step]) -> list[Step]:
        """The steps of one stage, in trace order."""
        return [s for s in steps if self.stages[s.id] == stage]

    def to_json(self) -> dict:
        return {"stages": {str(k): v for k, v in self.stages.items()}, "ratio": self.ratio, "kept": self.kept,
                "reason": self.reason}


class DagError(ValueError):
    """The dependency DAG does not fit the steps: names the step and what is wrong."""


def check_dag(step_ids: Sequence[int], parents: Mapping[int, Sequence[int]], *, parents_earlier: bool = True) -> None:
    """Raise `DagError` unless every step has an entry, every parent is a known step, and there is no cycle.

    With `parents_earlier` (the default), every parent must also come before its child in trace order, which rules
    out cycles by construction and is what the extraction prompt asks for.
    """
    ids = list(step_ids)
    known = set(ids)
    if len(known) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise DagError(f"duplicate step ids {dup}")
    order = {sid: k for k, sid in enumerate(ids)}
    for sid in ids:
        if sid not in parents:
            raise DagError(f"step {sid} has no entry in the DAG")
    for sid, ps in parents.items():
        if sid not in known:
            raise DagError(f"DAG entry for unknown step {sid}")
        for p in ps:
            if p not in known:
                raise DagError(f"step {sid} has unknown parent {p}")
            if p == sid:
                raise DagError(f"step {sid} lists itself as a parent")
    # Cycles first (they are the more telling error), by an iterative DFS with colours.
    colour = {sid: 0 for sid in ids}
    for root in ids:
        if colour[root]:
            continue
        stack = [(root, iter(parents[root]))]
        colour[root] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                colour[node] = 2
                stack.pop()
            elif colour[nxt] == 1:
                cycle = [n for n, _ in stack][[n for n, _ in stack].index(nxt):]
                raise DagError(f"the DAG has a cycle: {' -> '.join(str(c) for c in cycle + [nxt])} "
                               f"(each depends on the next)")
            elif colour[nxt] == 0:
                colour[nxt] = 1
                stack.append((nxt, iter(parents[nxt])))
    if parents_earlier:
        for sid, ps in parents.items():
            for p in ps:
                if order[p] > order[sid]:
                    raise DagError(f"step {sid} has parent {p}, which comes later in the trace")


def _topological(steps: Sequence[Step], parents: Mapping[int, Sequence[int]]) -> list[Step]:
    """Steps in trace order, except that a step never comes before one of its parents."""
    placed: set[int] = set()
    pending = list(steps)
    out: list[Step] = []
    while pending:
        for k, s in enumerate(pending):
            if all(p in placed for p in parents.get(s.id, ())):
                out.append(s)
                placed.add(s.id)
                del pending[k]
                break
        else:  # pragma: no cover - check_dag rules this out
            raise DagError(f"the DAG has a cycle among steps {[s.id for s in pending]}")
    return out


def pack(steps: Sequence[Step], parents: Mapping[int, Sequence[int]], width: int | None = None, *,
         min_ratio: float = DEFAULT_MIN_RATIO, max_stages: int = DEFAULT_MAX_STAGES,
         parents_earlier: bool = False) -> Packing:
    """Assign a stage to every step, compute the ratio and apply the ratio and stage-count filters.

    `parents` maps a step id to the ids it depends on (missing ids raise `DagError`). `width` caps the prompts per
    stage. `parents_earlier=True` also demands that parents come earlier in the trace (the released DAGs satisfy
    it; only cycles are fatal by default).
    """
    if width is not None and width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    check_dag([s.id for s in steps], parents, parents_earlier=parents_earlier)
    by_id = {s.id: s for s in steps}
    stages: dict[int, int] = {}
    prompts_in: dict[int, int] = {}
    for s in _topological(steps, parents):
        stage = 1
        for p in parents[s.id]:
            stage = max(stage, stages[p] + (1 if by_id[p].has_execution else 0))
        if width is not None and s.has_execution:
            while prompts_in.get(stage, 0) >= width:
                stage += 1
        stages[s.id] = stage
        if s.has_execution:
            prompts_in[stage] = prompts_in.get(stage, 0) + 1
    num_stages = max(stages.values(), default=0)
    executed = sum(1 for s in steps if s.has_execution)
    ratio = executed / num_stages if num_stages else 0.0
    reason = None
    if not steps:
        reason = "no_steps: the trace has no steps"
    elif num_stages > max_stages:
        reason = f"too_many_stages: {num_stages} > {max_stages}"
    elif ratio < min_ratio:
        reason = f"low_ratio: {ratio:.3f} < {min_ratio}"
    return Packing(stages=stages, num_stages=num_stages, executed=executed, ratio=ratio, kept=reason is None,
                   reason=reason, width=width, parents={s.id: list(parents[s.id]) for s in steps})


def fold_short_executions(steps: Sequence[Step], threshold: int = 3, *,
                          line_count=None) -> list[Step]:
    """Turn steps with a short execution into plan-only steps (the execution text joins the plan).

    An execution spanning lines a..b folds when b - a < threshold, i.e. up to `threshold` lines: this is what the
    released SPRINT code does (its paper says "fewer than three lines"); threshold 0 folds nothing. Steps without
    line ranges are measured with `line_count(text)` (default: the sentence splitter of `sprint.curate.lines`).
    """
    if line_count is None:
        from sprint.curate.lines import split_lines

        def line_count(text: str) -> int:
            return len(split_lines(text))

    out = []
    for s in steps:
        if not s.has_execution:
            out.append(replace(s, prompt=None, execution_lines=None))
            continue
        span = (s.execution_lines[1] - s.execution_lines[0] if s.execution_lines is not None
                else line_count(s.execution) - 1)
        if span < threshold:
            # The released code joins plan and execution with one newline; we do the same.
            plan = s.plan + "\n" + s.execution if s.plan else s.execution
            out.append(replace(s, plan=plan, prompt=None, execution=None, execution_lines=None))
        else:
            out.append(s)
    return out


def to_trajectory(question: str | None, steps: Sequence[Step], packing: Packing, final_answer: str | None, *,
                  think: bool = True, comments: bool = True,
                  openers: Mapping[int, str] | None = None) -> Trajectory:
    """Build the SPRINT trajectory of a packing.

    A stage's plan is its steps' plan texts in trace order. Between two steps of a stage that are not neighbours in
    the trace comes the step separator line; a step whose parents have executions in earlier stages opens with a
    "Based on execution_a.b:" line (left out when it names the same executions as the previous such line of the
    stage, as the released data does). Executed steps add their prompt to the plan; their executions are numbered
    in that order. With `comments`, a plan-only step's comment follows its plan and an executed step's comment
    follows its execution (the released code loses comments; `comments=False` reproduces that).
    `openers` maps a stage number to a line the planner writes first in that stage's plan (a task's own reading of
    the previous stage's executions, e.g. Countdown's outcome line); the released data has none.
    """
    openers = openers or {}
    bad = sorted(k for k in openers if not 1 <= k <= packing.num_stages)
    if bad:
        raise ValueError(f"openers: stage {bad[0]} does not exist (the packing has {packing.num_stages} stages)")
    pos = {s.id: k for k, s in enumerate(steps)}
    by_id = {s.id: s for s in steps}
    names: dict[int, tuple[int, int]] = {}
    out_stages: list[Stage] = []
    for stage_no in range(1, packing.num_stages + 1):
        members = packing.steps_in(stage_no, steps)
        parts: list[PlanPart] = []
        executions: list[Execution] = []
        buf = openers[stage_no].strip() + "\n" if openers.get(stage_no, "").strip() else ""
        prev_refs: list[tuple[int, int]] | None = None
        prev: Step | None = None
        for s in members:
            refs = [names[p] for p in packing.execution_parents(s, by_id)]
            if prev is not None and pos[s.id] != pos[prev.id] + 1:
                buf += T.STEP_SEPARATOR + "\n"
            buf += "\n"
            if refs and refs != prev_refs:
                buf += T.based_on_line(refs) + "\n"
            if s.plan.strip():
                buf += s.plan.strip() + "\n"
            if s.has_execution:
                j = len(executions) + 1
                names[s.id] = (stage_no, j)
                if s.plan.strip():
                    buf += "\n"  # a blank line between a plan and its prompt, as in the released data
                parts.append(buf)
                parts.append(Prompt(stage_no, j, (s.prompt or "").strip()))
                buf = "\n"
                text = (s.execution or "").strip()
                if comments and s.comment and s.comment.strip():
                    text += "\n" + s.comment.strip()
                executions.append(Execution(stage_no, j, text))
            elif comments and s.comment and s.comment.strip():
                buf += s.comment.strip() + "\n"
            if refs:
                prev_refs = refs
            prev = s
        parts.append(buf)
        # Canonical plans (as `sprint.format.parse` returns them) carry no outer whitespace and no empty parts.
        if isinstance(parts[0], str):
            parts[0] = parts[0].lstrip()
        if isinstance(parts[-1], str):
            parts[-1] = parts[-1].rstrip()
        out_stages.append(Stage(index=stage_no, plan=Plan([p for p in parts if not (isinstance(p, str) and not p)]),
                                executions=executions, execution_block=True))
    return Trajectory(question=question, stages=out_stages, final_answer=final_answer, think=think)

