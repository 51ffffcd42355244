"""The records of a SPRINT trajectory and its canonical rendering.

A trajectory is a question, then stages (a plan with prompts, then the executions of those prompts), then a final
answer. `render()` writes the one canonical text for a trajectory; training data, inference prompts and reports
all go through it, so the model sees the same bytes everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from sprint.format import tags as T


@dataclass
class Prompt:
    """One subtask the planner hands to an executor: `<prompt_{stage}.{index}> text </prompt_{stage}.{index}>`."""

    stage: int
    index: int
    text: str

    @property
    def id(self) -> str:
        return f"{self.stage}.{self.index}"


PlanPart = Union[str, Prompt]


@dataclass
class Plan:
    """A stage's plan: free text interleaved with prompts, in the order written."""

    parts: list[PlanPart] = field(default_factory=list)

    @property
    def prompts(self) -> list[Prompt]:
        return [p for p in self.parts if isinstance(p, Prompt)]

    def segments(self) -> list[tuple[str, Prompt | None]]:
        """The plan cut after every prompt: [(text before prompt 1, prompt 1), ..., (trailing text, None)].

        Segment j is what the planner writes between the end of prompt j-1 and the end of prompt j; this is the
        split the sequential-token metric uses.
        """
        out: list[tuple[str, Prompt | None]] = []
        buf: list[str] = []
        for part in self.parts:
            if isinstance(part, Prompt):
                out.append(("".join(buf), part))
                buf = []
            else:
                buf.append(part)
        out.append(("".join(buf), None))
        return out

    @property
    def text(self) -> str:
        """The plan as the planner wrote it (prompts included, rendered with their tags)."""
        return render_plan_body(self)

    @classmethod
    def from_text(cls, text: str) -> "Plan":
        return cls(parts=[text] if text else [])


@dataclass
class Execution:
    """One executor's result for prompt `stage.index`."""

    stage: int
    index: int
    text: str

    @property
    def id(self) -> str:
        return f"{self.stage}.{self.index}"


@dataclass
class Stage:
    """Plan i and its execution block. `execution_block=False` means the text had no `<Execution_i>` at all."""

    index: int
    plan: Plan = field(default_factory=Plan)
    executions: list[Execution] = field(default_factory=list)
    execution_block: bool = True

    @property
    def prompts(self) -> list[Prompt]:
        return self.plan.prompts


@dataclass(frozen=True)
class Diagnostic:
    """Something the lenient parser noticed: a machine-readable code, a message and the character position."""

    code: str
    message: str
    pos: int

    def __str__(self) -> str:
        return f"{self.code} at char {self.pos}: {self.message}"


@dataclass
class Trajectory:
    """A whole SPRINT trajectory. `diagnostics` lists what the parser had to tolerate (empty when clean)."""

    question: str | None = None
    stages: list[Stage] = field(default_factory=list)
    final_answer: str | None = None
    think: bool = True
    preamble: str = ""
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def prompts(self) -> list[Prompt]:
        return [p for s in self.stages for p in s.prompts]

    @property
    def ok(self) -> bool:
        return not self.diagnostics


# ---------------------------------------------------------------------------------------------- rendering
def render_prompt(p: Prompt) -> str:
    name = T.prompt_name(p.stage, p.index)
    return f"{T.open_tag(name)} {p.text.strip()} {T.close_tag(name)}"


def render_plan_body(plan: Plan) -> str:
    return "".join(render_prompt(p) if isinstance(p, Prompt) else p for p in plan.parts).strip()


def render_plan(stage: Stage) -> str:
    name = T.plan_name(stage.index)
    return f"{T.open_tag(name)}\n{render_plan_body(stage.plan)}\n{T.close_tag(name)}"


def render_execution(e: Execution) -> str:
    name = T.execution_name(e.stage, e.index)
    return f"{T.open_tag(name)}\n{e.text.strip()}\n{T.close_tag(name)}"


def render_execution_block(stage: Stage) -> str:
    name = T.execution_block_name(stage.index)
    body = "\n\n".join(render_execution(e) for e in stage.executions) if stage.executions else T.NO_PROMPT_TEXT
    return f"{T.open_tag(name)}\n{body}\n{T.close_tag(name)}"


def render_stage(stage: Stage) -> str:
    if stage.execution_block or stage.executions:
        return render_plan(stage) + "\n\n" + render_execution_block(stage)
    return render_plan(stage)


def render_question(question: str) -> str:
    return f"{T.open_tag(T.QUESTION)}\n{question.strip()}\n{T.close_tag(T.QUESTION)}"


def render_final_answer(text: str) -> str:
    return f"{T.open_tag(T.FINAL_ANSWER)}\n{text.strip()}\n{T.close_tag(T.FINAL_ANSWER)}"


def render_body(traj: Trajectory) -> str:
    """Everything after the question block: what the model generates (with `<think>` when `traj.think`)."""
    blocks: list[str] = []
    if traj.preamble.strip():
        blocks.append(traj.preamble.strip())
    blocks.extend(render_stage(s) for s in traj.stages)
    if traj.final_answer is not None:
        blocks.append(render_final_answer(traj.final_answer))
    body = "\n\n".join(blocks)
    if traj.think:
        body = f"{T.open_tag(T.THINK)}\n{body}\n{T.close_tag(T.THINK)}"
    return body


def render(traj: Trajectory, *, question: bool = True) -> str:
    """The canonical text of a trajectory. `render(parse(render(t))) == render(t)` for every `t`."""
    body = render_body(traj)
    if question and traj.question is not None:
        return render_question(traj.question) + "\n\n" + body
    return body
