"""Training records of curated traces: chat `messages` JSONL (TRL / ms-swift style), SPRINT and sequential.

One kept trace gives two records with the same id:

    {"id", "format": "sprint",     "question", "answer", "messages": [system, user, assistant]}
    {"id", "format": "sequential", "question", "answer", "messages": [system, user, assistant]}

The assistant content is `sprint.format.render_body(trajectory)` (with `<think>`) for SPRINT and
`sprint.format.render_sequential_body` of the same trace for the baseline; system and user messages come from
`sprint.format.layout.messages`, the same function inference uses. Every record is parsed back with the format
module before it is emitted; one that does not round-trip is a bug and raises `RecordError`.
"""

from __future__ import annotations

from typing import Sequence

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
    from sprint.format import parse, render_body

    body = render_body(to_trajectory(question, steps, packing, final_answer, think=True, comments=comments))
    back = parse(body)
    if back.diagnostics:
        raise RecordError(f"rendered SPRINT text does not parse cleanly: {back.diagnostics[0]}")
    if render_body(back) != body:
        raise RecordError("rendered SPRINT text does not round-trip through sprint.format.parse")
    if len(back.stages) != packing.num_stages or len(back.prompts) != packing.executed:
        raise RecordError(f"parsed back {len(back.stages)} stages / {len(back.prompts)} prompts, expected "
                          f"{packing.num_stages} / {packing.executed}")
    return body


def sequential_completion(trace: str, final_answer: str) -> str:
    """The sequential assistant text of the same trace, checked to parse back to itself."""
    from sprint.format import SequentialTrace, parse_sequential, render_sequential_body

    body = render_sequential_body(SequentialTrace(thinking=trace, answer=final_answer))
    back = parse_sequential(body)
    if render_sequential_body(back) != body:
        raise RecordError("rendered sequential text does not round-trip through sprint.format.parse_sequential")
    return body


def build_records(item_id: str, question: str, answer: str | None, trace: str, steps: Sequence[Step],
                  packing: Packing, final_answer: str, *, comments: bool = True) -> list[dict]:
    from sprint.format.layout import messages

    sprint_body = sprint_completion(question, steps, packing, final_answer, comments=comments)
    seq_body = sequential_completion(trace, final_answer)
    return [
        {"id": item_id, "format": "sprint", "question": question, "answer": answer,
         "messages": messages(question, "sprint", sprint_body)},
        {"id": item_id, "format": "sequential", "question": question, "answer": answer,
         "messages": messages(question, "sequential", seq_body)},
    ]
