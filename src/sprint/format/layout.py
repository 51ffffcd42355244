"""The layout a model sees around a trajectory: system prompts, chat messages and the text prefix it continues.

Training and inference both build their text here, so the bytes before the point where the model generates are
identical in both (the paper's release trained with chat markers and ran inference without them; we do not).

* With a tokenizer that has a chat template, the prefix is the template applied to [system, user] with the
  generation prompt; without one, it is the plain `<Question>` block.
* The completion is the rendered trajectory body. When a template's generation prompt already opens `<think>`
  (DeepSeek-R1-Distill does), the body's own `<think>` opener is dropped so it is not written twice.
"""

from __future__ import annotations

from typing import Literal

from sprint.format import tags as T
from sprint.format.trajectory import render_question

Method = Literal["sprint", "sequential"]

SPRINT_SYSTEM_PROMPT = (
    "You solve problems by planning in stages. In stage i, write your reasoning inside <Plan_i>. When parts of the "
    "work do not depend on each other, hand each one to a helper by writing it inside <prompt_i.j> ... </prompt_i.j>; "
    "the helpers' results come back inside <Execution_i>, one <execution_i.j> block per prompt, and you continue "
    "with the next plan. When you are done, write the answer inside <Final_answer> with the final result in "
    "\\boxed{}."
)
SEQUENTIAL_SYSTEM_PROMPT = (
    "Think the problem through step by step, then give the answer with the final result in \\boxed{}."
)
EXECUTOR_NOTE = ""  # executors continue the same text; they need no separate instructions (see inference docs)


def system_prompt(method: Method) -> str:
    if method == "sprint":
        return SPRINT_SYSTEM_PROMPT
    if method == "sequential":
        return SEQUENTIAL_SYSTEM_PROMPT
    raise ValueError(f"method must be 'sprint' or 'sequential', got {method!r}")


def messages(question: str, method: Method, completion: str | None = None) -> list[dict]:
    """Chat messages for one example: system, user (the question), and the assistant completion when given."""
    out = [{"role": "system", "content": system_prompt(method)}, {"role": "user", "content": question.strip()}]
    if completion is not None:
        out.append({"role": "assistant", "content": completion})
    return out


def has_chat_template(tokenizer) -> bool:
    return tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))


def prompt_prefix(question: str, method: Method, tokenizer=None) -> str:
    """The exact text that precedes the model's generation, for training and inference alike."""
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(messages(question, method), tokenize=False, add_generation_prompt=True)
    return render_question(question) + "\n\n"


def completion_text(prefix: str, body: str) -> str:
    """The body as the model must write it after `prefix` (drops a `<think>` opener the prefix already holds)."""
    think = T.open_tag(T.THINK)
    if prefix.rstrip().endswith(think) and body.startswith(think):
        body = body[len(think):].lstrip("\n")
    return body


def generation_start(prefix: str) -> str:
    """What the model is given to continue at the start of a SPRINT run: prefix plus the opening tags."""
    think = T.open_tag(T.THINK)
    opener = "" if prefix.rstrip().endswith(think) else think + "\n"
    return prefix + opener
