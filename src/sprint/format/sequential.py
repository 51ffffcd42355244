"""The plain sequential format the baselines use: thinking text, then a final answer.

Canonical text: `<Question>...</Question>` (optional), `<think>` + thinking + `</think>`, then the answer text.
Raw outputs of sequential models often have only the thinking (with the boxed answer inside it) or no `</think>`;
`parse_sequential` accepts all of these.
"""

from __future__ import annotations

from dataclasses import dataclass

from sprint.format import tags as T
from sprint.format.trajectory import render_question


@dataclass
class SequentialTrace:
    """One chain of thought: `thinking` then `answer` (the text after `</think>`, may be empty)."""

    thinking: str
    answer: str = ""
    question: str | None = None

    @property
    def text(self) -> str:
        """All generated text (thinking and answer), without tags."""
        return (self.thinking + ("\n\n" + self.answer if self.answer else "")).strip()


def render_sequential_body(trace: SequentialTrace) -> str:
    body = f"{T.open_tag(T.THINK)}\n{trace.thinking.strip()}\n{T.close_tag(T.THINK)}"
    if trace.answer.strip():
        body += "\n\n" + trace.answer.strip()
    return body


def render_sequential(trace: SequentialTrace, *, question: bool = True) -> str:
    body = render_sequential_body(trace)
    if question and trace.question is not None:
        return render_question(trace.question) + "\n\n" + body
    return body


def parse_sequential(text: str) -> SequentialTrace:
    """Split text into question (if tagged), thinking and answer. Never fails."""
    question = None
    q_open, q_close = T.open_tag(T.QUESTION), T.close_tag(T.QUESTION)
    if text.lstrip().startswith(q_open) and q_close in text:
        head, _, text = text.partition(q_close)
        question = head.split(q_open, 1)[1].strip()
    t_open, t_close = T.open_tag(T.THINK), T.close_tag(T.THINK)
    stripped = text.strip()
    if stripped.startswith(t_open):
        stripped = stripped[len(t_open):]
    if t_close in stripped:
        thinking, _, answer = stripped.partition(t_close)
    else:
        thinking, answer = stripped, ""
    return SequentialTrace(thinking=thinking.strip(), answer=answer.strip(), question=question)
