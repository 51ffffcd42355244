"""Training records of curated traces: chat `messages` JSONL (TRL / ms-swift style), SPRINT and sequential.

One kept trace gives a SPRINT and a sequential record with the same id, then (by default) one executor record
per prompt of the SPRINT trajectory:

    {"id", "format": "sprint",     "question", "answer", "messages": [system, user, assistant]}
    {"id", "format": "sequential", "question", "answer", "messages": [system, user, assistant]}
    {"id": "<id>#exec-<i>.<j>", "format": "sprint", "role": "executor", "completion_start": n, "question",
     "answer", "messages": [system, user, assistant]}

The assistant content is `sprint.format.render_body(trajectory)` (with `<think>`) for SPRINT and
`sprint.format.render_sequential_body` of the same trace for the baseline; system and user messages come from
`sprint.format.layout.messages`, the same function inference uses. Every record is parsed back with the format
module before it is emitted; one that does not round-trip is a bug and raises `RecordError`.

Why executor records: at inference executor i.j does not continue the full trajectory; it continues the context the
orchestrator builds (`sprint.format.incremental.executor_context`: plan i cut right after its own prompt, no sibling
executions). A model trained only on full trajectories never saw that layout. An executor record's assistant content
is `<think>\n` + that context + the execution and its closing tag (`incremental.executor_views`); the loss starts at
character `completion_start` (omitted / 0 = the whole assistant content, as in the other records), so the model learns
the execution, and to close it, in exactly the context inference gives it. "role" is "executor" ("planner" when
absent).
"""

from __future__ import annotations

from typing import Mapping, Sequence

from sprint.curate.packing import Packing, Step, to_trajectory


class RecordError(RuntimeError):
    """A rendered record that does not parse back to the same text (a bug in rendering; never emitted)."""


def final_answer_text(*candidates: str | None) -> str | None:
    """The final-answer text: the last paragraph with a `\\boxed{}` of the first candidate that has one.

    Candidates are tried in order (typically: the solution field, the text after the trace's thinking, the trace).
    """
    from sprint.eval.grading import boxed_contents

    for text in candidates:
        if not text:
            continue
        paragraphs = [p.strip() for p in text.replace("\r\n", "\n").split("\n\n") if p.strip()]
        for p in reversed(paragraphs):
            if boxed_contents(p):
                return p
    return None


def sprint_completion(question: str, steps: Sequence[Step], packing: Packing, final_answer: str, *,
                      comments: bool = True) -> str:
    """The SPRINT assistant text of a packing, checked to parse back to itself."""
    return _sprint_body(question, steps, packing, final_answer, comments=comments)[0]


def _sprint_body(question: str, steps: Sequence[Step], packing: Packing, final_answer: str, *,
                 comments: bool = True, openers: Mapping[int, str] | None = None):
    """(assistant text, the trajectory parsed back from it), checked to round-trip."""
    from sprint.format import parse, render_body

    body = render_body(to_trajectory(question, steps, packing, final_answer, think=True, comments=comments,
                                     openers=openers))
    back = parse(body)
    if back.diagnostics:
        raise RecordError(f"rendered SPRINT text does not parse cleanly: {back.diagnostics[0]}")
    if render_body(back) != body:
        raise RecordError("rendered SPRINT text does not round-trip through sprint.format.parse")
    if len(back.stages) != packing.num_stages or len(back.prompts) != packing.executed:
        raise RecordError(f"parsed back {len(back.stages)} stages / {len(back.prompts)} prompts, expected "
                          f"{packing.num_stages} / {packing.executed}")
    return body, back


def sequential_completion(trace: str, final_answer: str) -> str:
    """The sequential assistant text of the same trace, checked to parse back to itself."""
    from sprint.format import SequentialTrace, parse_sequential, render_sequential_body

    body = render_sequential_body(SequentialTrace(thinking=trace, answer=final_answer))
    back = parse_sequential(body)
    if render_sequential_body(back) != body:
        raise RecordError("rendered sequential text does not round-trip through sprint.format.parse_sequential")
    return body


def executor_records_of(item_id: str, question: str, answer: str | None, body: str, traj=None) -> list[dict]:
    """The executor records of the SPRINT assistant text `body` (`traj` = its parse, parsed here when None), in
    stage and prompt order. Each is checked against `body`: its context is the same bytes as `body` up to the
    executor's own prompt's closing tag, then the execution opening inference writes; its target is exactly the
    execution text and closing tag that `body` holds after that prompt. Raises `RecordError` otherwise."""
    from sprint.format import incremental as F
    from sprint.format import parse
    from sprint.format import tags as T
    from sprint.format.layout import messages

    if traj is None:
        traj = parse(body)
        if traj.diagnostics:
            raise RecordError(f"{item_id}: SPRINT text does not parse cleanly: {traj.diagnostics[0]}")
    think = T.open_tag(T.THINK) + "\n"  # what generation_start adds when the prompt prefix has no <think>
    if not body.startswith(think):
        raise RecordError(f"{item_id}: a SPRINT record must open with <think>; executor records continue it")
    try:
        views = list(F.executor_views(traj))
    except ValueError as e:
        raise RecordError(f"{item_id}: {e}") from None
    out = []
    for v in views:
        where = f"{item_id}: executor record {v.stage}.{v.index}"
        opening = F.executor_opening(v.stage, v.index)
        head = think + v.context
        if not head.endswith(opening):
            raise RecordError(f"{where}: the context does not end with the execution opening")
        plan_part = head[: -len(opening)]
        if not plan_part.endswith(T.close_tag(T.prompt_name(v.stage, v.index))) or not body.startswith(plan_part):
            raise RecordError(f"{where}: the context is not the full record's text up to the executor's prompt")
        execution = T.open_tag(T.execution_name(v.stage, v.index)) + "\n" + v.target
        if body.count(execution) != 1 or body.find(execution) < len(plan_part):
            raise RecordError(f"{where}: the target is not the execution the full record holds after the prompt")
        out.append({"id": executor_record_id(item_id, v.stage, v.index), "format": "sprint", "role": "executor",
                    "completion_start": len(head), "question": question, "answer": answer,
                    "messages": messages(question, "sprint", head + v.target)})
    return out


EXECUTOR_ID_MARK = "#exec-"


def executor_record_id(item_id: str, stage: int, index: int) -> str:
    return f"{item_id}{EXECUTOR_ID_MARK}{stage}.{index}"


def parse_executor_record_id(record_id: str) -> tuple[str, int, int]:
    """(item id, stage, prompt index) of an id made by `executor_record_id`."""
    item_id, mark, name = record_id.rpartition(EXECUTOR_ID_MARK)
    stage, _, index = name.partition(".")
    if not mark or not stage.isdigit() or not index.isdigit():
        raise ValueError(f"id {record_id!r}: not an executor record id (<item>{EXECUTOR_ID_MARK}<stage>.<index>)")
    return item_id, int(stage), int(index)


def build_records(item_id: str, question: str, answer: str | None, trace: str, steps: Sequence[Step],
                  packing: Packing, final_answer: str, *, comments: bool = True,
                  executor_records: bool = True, openers: Mapping[int, str] | None = None) -> list[dict]:
    """[SPRINT record, sequential record, executor records (when `executor_records`) in stage and prompt order];
    `openers`: see `sprint.curate.packing.to_trajectory`."""
    from sprint.format.layout import messages

    sprint_body, traj = _sprint_body(question, steps, packing, final_answer, comments=comments, openers=openers)
    seq_body = sequential_completion(trace, final_answer)
    records = [
        {"id": item_id, "format": "sprint", "question": question, "answer": answer,
         "messages": messages(question, "sprint", sprint_body)},
        {"id": item_id, "format": "sequential", "question": question, "answer": answer,
         "messages": messages(question, "sequential", seq_body)},
    ]
    if executor_records:
        records += executor_records_of(item_id, question, answer, sprint_body, traj)
    return records
