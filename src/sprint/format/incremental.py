"""Building a trajectory one model call at a time: the exact text before each planner / executor call, and
scanning of partial model output for the format's tags.

The orchestrator (`sprint.inference`) never spells a tag; it asks this module for:

* `stage_context(start, stages)`: the rendered question/opening plus finished stages, ready for the next block;
  byte-identical to the corresponding prefix of `render()` of the finished trajectory.
* `plan_opening(i)`, `final_answer_opening()`: the opening of a plan / final-answer block as `render()` writes it.
* `executor_context(...)`: what an executor continues (see `sprint.inference.orchestrator` for why).
* `executor_views(trajectory)`: for a finished trajectory, every executor's context and the text it must write,
  which is what executor training records are made of (so training shows executors the bytes inference sends).
* `find_tags(text)`: every format tag of a (partial) model output, as `TagMatch` records.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator

from sprint.format import tags as T
from sprint.format.parse import _scan, _Tag
from sprint.format.trajectory import Plan, Prompt, Stage, Trajectory, render_plan_body, render_stage

#: What `render()` writes between two top-level blocks (stages, final answer).
BLOCK_SEPARATOR = "\n\n"


#: A format tag found in text: `kind` (`tags.PLAN`, `tags.PROMPT`, ...), `closing`, `stage`/`index` (None when the
#: tag has no number) and its span `start`/`end`; `.text` writes it back. The lenient parser's own record.
TagMatch = _Tag


def find_tags(text: str, start: int = 0) -> list[TagMatch]:
    """Every format tag in `text[start:]` (positions relative to `text`), in order. Math like `a<b>c` is not a tag."""
    if text.find("<", max(start, 0)) == -1:  # the common case while streaming: no tag can be there
        return []
    if start <= 0:
        return _scan(text)
    return [replace(t, start=t.start + start, end=t.end + start) for t in _scan(text[start:])]


def is_open(tag: TagMatch, kind: str) -> bool:
    return tag.kind == kind and not tag.closing


def is_close(tag: TagMatch, kind: str) -> bool:
    return tag.kind == kind and tag.closing


#: Longest tag a partial scan must be able to see whole (a window this long before new text catches split tags).
MAX_TAG_CHARS = len(T.close_tag(T.execution_name(10**4, 10**4)))


def plan_opening(stage: int) -> str:
    """The first bytes of plan `stage` as `render_plan` writes them (the body follows)."""
    return T.open_tag(T.plan_name(stage)) + "\n"


def final_answer_opening() -> str:
    """The first bytes of the final-answer block as `render_final_answer` writes them."""
    return T.open_tag(T.FINAL_ANSWER) + "\n"


def stage_context(start: str, stages: list[Stage]) -> str:
    """`start` (the text up to and including `<think>\\n`) plus the finished stages, ending where the next block
    (a plan or the final answer) begins, exactly as `render()` lays them out."""
    return start + "".join(render_stage(s) + BLOCK_SEPARATOR for s in stages)


def plan_through(plan: Plan, index: int) -> Plan:
    """The plan cut right after its `index`-th prompt (1-based, in order written)."""
    seen = 0
    for k, part in enumerate(plan.parts):
        if isinstance(part, Prompt):
            seen += 1
            if seen == index:
                return Plan(parts=list(plan.parts[: k + 1]))
    raise IndexError(f"plan has {seen} prompt(s), no prompt number {index}")


def executor_opening(stage: int, index: int) -> str:
    """What follows a (cut) plan body in an executor's context: the plan's close, the execution block's opening
    and the opening of execution `stage.index`, laid out as `render_stage` lays them out."""
    return ("\n" + T.close_tag(T.plan_name(stage)) + BLOCK_SEPARATOR + T.open_tag(T.execution_block_name(stage))
            + "\n" + T.open_tag(T.execution_name(stage, index)) + "\n")


def executor_context(stage_start: str, stage: int, plan: Plan, index: int) -> str:
    """The text executor `stage.index` continues: the stage context, plan `stage` up to and including its
    `index`-th prompt (canonical rendering), then `executor_opening(stage, index)`."""
    return (stage_start + plan_opening(stage) + render_plan_body(plan_through(plan, index))
            + executor_opening(stage, index))


def executor_target(stage: int, index: int, text: str) -> str:
    """What executor `stage.index` writes after its context for execution `text`: the text as `render_execution`
    lays it out, then its closing tag. The closing tag is the executor's stop string
    (`tags.executor_stop_strings`), so a model trained on this target ends its own generation there."""
    return text.strip() + "\n" + T.close_tag(T.execution_name(stage, index))


@dataclass(frozen=True)
class ExecutorView:
    """Executor `stage.index` of a finished trajectory as inference runs it.

    `context` is what follows `layout.generation_start(prefix)` in the executor's prompt (finished stages before
    `stage`, then `executor_context`), so `generation_start(prefix) + context` is the exact prompt the orchestrator
    sends; `target` is what the executor must write (`executor_target`)."""

    stage: int
    index: int
    context: str
    target: str


def executor_views(traj: Trajectory) -> Iterator[ExecutorView]:
    """Every executor of `traj`, in stage and prompt order, as the orchestrator would call it.

    Raises ValueError for a trajectory the orchestrator cannot produce (no `<think>`, a preamble, prompts not
    numbered 1, 2, ... in order, a prompt without its execution), since its views would not match inference.
    """
    if not traj.think or traj.preamble.strip():
        raise ValueError("executor_views: the trajectory must open with <think> and have no preamble, as every "
                         "orchestrator run does")
    for k, stage in enumerate(traj.stages):
        if not stage.prompts:
            continue
        start = stage_context("", traj.stages[:k])
        executions = {e.index: e for e in stage.executions}
        for j, prompt in enumerate(stage.prompts, start=1):
            if (prompt.stage, prompt.index) != (stage.index, j):
                raise ValueError(f"executor_views: stage {stage.index}: prompt number {j} is named "
                                 f"{T.prompt_name(prompt.stage, prompt.index)}; the orchestrator renumbers prompts "
                                 f"to {T.prompt_name(stage.index, j)}")
            e = executions.get(j)
            if e is None or e.stage != stage.index:
                raise ValueError(f"executor_views: stage {stage.index}: prompt {prompt.id} has no execution")
            yield ExecutorView(stage.index, j, executor_context(start, stage.index, stage.plan, j),
                               executor_target(stage.index, j, e.text))


def renumber_prompts(plan: Plan, stage: int) -> list[tuple[str, str]]:
    """Number the plan's prompts `stage.1`, `stage.2`, ... in order written (in place); returns (old, new) names of
    the prompts whose number changed."""
    changed = []
    for j, p in enumerate(plan.prompts, start=1):
        if (p.stage, p.index) != (stage, j):
            changed.append((T.prompt_name(p.stage, p.index), T.prompt_name(stage, j)))
            p.stage, p.index = stage, j
    return changed
