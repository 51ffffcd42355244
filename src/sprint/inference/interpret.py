"""Reading one planner turn (complete or still streaming) and one executor output, repairing what the model got
wrong, and saying what was repaired.

A planner turn is what the planner wrote after the stage context: normally `<Plan_i> ... </Plan_i>` (the closing
tag is the stop string, so it is not in the text) or `<Final_answer> ... `. Models also write misnumbered tags,
forget the opening tag, start writing executions themselves or run into the next stage; each case becomes a plan
and/or a final answer plus `Repair` records. The same function reads a partial turn while it streams, which is how
eager dispatch finds the prompts that are complete.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from sprint.format import parse_plan
from sprint.format import tags as T
from sprint.format import incremental as F
from sprint.format.incremental import TagMatch, find_tags, renumber_prompts
from sprint.format.trajectory import Plan

_EXCERPT = 80


def excerpt(text: str, n: int = _EXCERPT) -> str:
    s = " ".join(text.split())
    return s if len(s) <= n else s[: n - 3] + "..."


@dataclass
class Repair:
    """Something the orchestrator fixed or gave up on: the stage (None outside stages), a machine-readable kind and a
    human-readable detail."""

    stage: int | None
    kind: str
    detail: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PlannerTurn:
    """What a planner turn amounts to. `plan` is None when the turn is only a final answer; `final_answer` is set
    when the turn wrote one (after a plan or instead of it). `ended` says the text holds a tag after which the
    planner must not go on (so a stream can be closed early)."""

    plan: Plan | None
    final_answer: str | None = None
    ended: bool = False
    repairs: list[Repair] = field(default_factory=list)


def interpret_planner_turn(text: str, stage: int) -> PlannerTurn:
    """Split planner output for stage `stage` into a plan (prompts renumbered `stage.1..k`) and/or a final answer.

    `text` starts where the model's block starts (it includes a plan opening the orchestrator wrote for it).
    """
    tags = find_tags(text)
    repairs: list[Repair] = []

    def repair(kind: str, detail: str) -> None:
        repairs.append(Repair(stage, kind, detail))

    first = tags[0] if tags else None
    lead = text[: first.start] if first else text

    if first is not None and F.is_open(first, T.FINAL_ANSWER) and not lead.strip():
        answer, ended = _final_answer_body(text, first, tags[1:], stage, repairs)
        return PlannerTurn(plan=None, final_answer=answer, ended=ended, repairs=repairs)

    if first is not None and F.is_open(first, T.PLAN):
        if first.stage != stage:
            repair("misnumbered_plan", f"{first.text} written for stage {stage}; renumbered")
        if lead.strip():
            repair("text_before_plan", f"text before {first.text} kept as plan text: {excerpt(lead)!r}")
        prefix = lead.strip() + "\n\n" if lead.strip() else ""
        body_start, rest = first.end, tags[1:]
    else:
        if text.strip():
            repair("missing_plan_tag", f"no <{T.plan_name(stage)}> opening; the text is read as the plan")
        prefix, body_start, rest = "", 0, tags

    end, final_answer, ended = len(text), None, False
    for t in rest:
        if t.kind == T.PROMPT:
            continue
        end, ended = t.start, True
        after = text[t.end:]
        if F.is_close(t, T.PLAN):
            # The right closing tag is a stop string and never reaches us: this one is misnumbered.
            repair("misnumbered_plan_close", f"{t.text} closes the plan of stage {stage}")
            if after.strip():
                repair("text_after_plan", f"text after {t.text} dropped: {excerpt(after)!r}")
        elif F.is_open(t, T.FINAL_ANSWER):
            repair("unclosed_plan", f"the plan of stage {stage} is not closed before {t.text}")
            final_answer, ended = _final_answer_body(text, t, [u for u in rest if u.start >= t.end], stage, repairs)
        elif t.kind in (T.EXECUTION_BLOCK, T.EXECUTION):
            repair("planner_wrote_executions", f"the planner wrote {t.text}; its text from there is dropped "
                   f"and the prompts are executed: {excerpt(text[t.start:])!r}")
        else:
            repair("unexpected_tag", f"{t.text} inside the plan of stage {stage}; the text from there is dropped: "
                   f"{excerpt(text[t.start:])!r}")
        break
    plan, diagnostics = parse_plan(prefix + text[body_start:end], stage)
    for d in diagnostics:
        repairs.append(Repair(stage, d.code, d.message))
    for old, new in renumber_prompts(plan, stage):
        repair("renumbered_prompt", f"<{old}> renumbered <{new}>")
    return PlannerTurn(plan=plan, final_answer=final_answer, ended=ended, repairs=repairs)


def _final_answer_body(text: str, opener: TagMatch, later: list[TagMatch], stage: int,
                       repairs: list[Repair]) -> tuple[str | None, bool]:
    """The final answer's text (up to the next tag, if any), and whether the turn is over."""
    nxt = next((t for t in later if t.start >= opener.end), None)
    if nxt is None:
        return text[opener.end:].strip(), False
    body = text[opener.end:nxt.start].strip()
    dropped = text[nxt.start:]
    if not F.is_close(nxt, T.FINAL_ANSWER) or dropped[len(nxt.text):].strip():
        repairs.append(Repair(stage, "text_after_final_answer", f"text from {nxt.text} dropped: {excerpt(dropped)!r}"))
    return body, True


def clean_execution(text: str, stage: int, index: int) -> tuple[str, list[Repair], bool]:
    """An executor's output cut at the first format tag it wrote (its own closing tag is a stop string and never
    arrives). Returns (text, repairs, whether a tag was found, so a stream can be closed)."""
    tags = find_tags(text)
    if not tags:
        return text.strip(), [], False
    t = tags[0]
    detail = f"executor {stage}.{index} wrote {t.text}; text from there dropped: {excerpt(text[t.start:])!r}"
    return text[: t.start].strip(), [Repair(stage, "executor_wrote_tags", detail)], True
