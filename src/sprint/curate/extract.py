"""Step extraction and dependency DAG with an LLM: our prompts, strict parsing and validation of the JSON answers,
and the bounded re-ask loop that quotes the error back to the model.

Extraction shows the model the trace as numbered lines (`sprint.curate.lines`) and asks for steps as line ranges;
we never let the model rewrite text: step texts are sliced from the original trace. The DAG call shows the steps
and asks which earlier steps each one uses.
"""

from __future__ import annotations

import json
import re
from typing import Callable, TypeVar

from sprint.curate.artifacts import ArtifactError, parse_parents
from sprint.curate.lines import Line, numbered, span_text
from sprint.curate.llm import CachedChat, LLMEndpoint
from sprint.curate.packing import DagError, Step, check_dag

T = TypeVar("T")

EXTRACT_SYSTEM = """\
You split a worked solution (someone's chain of thought) into steps, so that pieces of work that do not depend on \
each other can later be carried out in parallel. The solution is given as numbered lines, "[n] text".

A step has up to three parts, each a range of consecutive lines:
- plan: where the writer works out what to do next or sets the work up (absent when the step starts straight in);
- execution: the lines that carry that work out: calculations, derivations, checking cases, trying values (absent \
when the step only reasons about direction);
- comment: lines right after the execution that react to its result (a remark, a sanity check, surprise) without \
starting new work (usually absent).
For every step that has an execution, also write a prompt: one or two sentences, in your own words, telling a \
helper exactly which work of the execution lines to do and with which inputs, so that a helper who has read only \
the plan so far could do it.

Rules:
1. Steps follow the text in order. Together they cover every line exactly once: no line in two steps or in two \
parts, no line left out (blank lines may be skipped).
2. Inside a step the parts come in the order plan, execution, comment.
3. A range is [first, last], both included, with the line numbers shown. Write null for an absent part.
4. Prefer steps whose execution is a self-contained piece of work; a long stretch of pure reasoning is a plan.

Reply with JSON only, nothing before or after it:
{"steps": [{"id": 1, "description": "<what the step does, a few words>", "plan": [first, last] or null, \
"prompt": "<instruction for the helper>" or null, "execution": [first, last] or null, "comment": [first, last] or \
null}, ...]}
Number the steps 1, 2, 3, ... in order."""

DAG_SYSTEM = """\
You are given the steps of a worked solution, in order. For every step, list the earlier steps whose results or \
conclusions it directly uses. A step that only carries the reasoning forward without needing a particular earlier \
result has no parents. Parents must be earlier steps (smaller ids).

Reply with JSON only, nothing before or after it, with an entry for every step id:
{"parents": {"1": [], "2": [1], "3": [1, 2], ...}}"""

RETRY_TEMPLATE = ("That answer cannot be used: {error}\n"
                  "Reply again with the complete corrected JSON only.")


class AnswerError(ValueError):
    """An LLM answer that does not parse or does not satisfy the rules; the message is quoted back to the model."""


class Rejected(Exception):
    """A trace given up on at `step` (input, answer, extract, dag, pack, render), with a short `code` for the
    summary (for example `invalid_answer`, `llm_error`, `low_ratio`) and a human `reason`."""

    def __init__(self, step: str, code: str, reason: str):
        super().__init__(f"{step}: {code}: {reason}")
        self.step, self.code, self.reason = step, code, reason


# ---------------------------------------------------------------------------------------------- JSON answers
_FENCE_RE = re.compile(r"^\s*```[A-Za-z]*\s*\n(.*?)\n\s*```\s*$", re.DOTALL)


def load_json_answer(text: str | None):
    """The JSON value of an answer (a ```json fence around it is tolerated); AnswerError otherwise."""
    if text is None or not text.strip():
        raise AnswerError("the answer is empty")
    s = text.strip()
    m = _FENCE_RE.match(s)
    if m:
        s = m.group(1).strip()
    try:
        return json.loads(s)
    except json.JSONDecodeError as e:
        raise AnswerError(f"the answer is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None


def _range(step_id: int, field: str, value, n: int) -> tuple[int, int] | None:
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in value)):
        raise AnswerError(f"step {step_id}: {field} must be [first, last] (two line numbers) or null, got "
                          f"{json.dumps(value)}")
    a, b = value
    if a > b:
        raise AnswerError(f"step {step_id}: {field} range [{a}, {b}] is reversed")
    if a < 1 or b > n:
        raise AnswerError(f"step {step_id}: {field} range [{a}, {b}] is outside the lines 1-{n}")
    return a, b


def _spans(numbers: list[int]) -> str:
    out, k = [], 0
    while k < len(numbers):
        j = k
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        out.append(str(numbers[k]) if j == k else f"{numbers[k]}-{numbers[j]}")
        k = j + 1
    return ", ".join(out)


def parse_steps_answer(text: str | None, trace: str, lines: list[Line]) -> list[Step]:
    """Validate an extraction answer against the numbered trace and build the steps (texts sliced from `trace`).

    Checks: JSON with a non-empty "steps" list; ids 1, 2, ... in order; ranges well formed and inside the trace;
    a plan or an execution in every step; a prompt with every execution; parts in plan/execution/comment order;
    no line in two places; every non-blank line covered; steps in trace order.
    """
    data = load_json_answer(text)
    if isinstance(data, dict):
        data = data.get("steps")
    if not isinstance(data, list) or not data:
        raise AnswerError('expected an object {"steps": [...]} with at least one step')
    n = len(lines)
    owner: dict[int, str] = {}
    steps: list[Step] = []
    for k, item in enumerate(data, start=1):
        if not isinstance(item, dict):
            raise AnswerError(f"step #{k} is not an object")
        sid = item.get("id")
        if sid != k or isinstance(sid, bool):
            raise AnswerError(f"step #{k} has id {json.dumps(sid)}; ids must be 1, 2, 3, ... in order")
        plan = _range(sid, "plan", item.get("plan"), n)
        execution = _range(sid, "execution", item.get("execution"), n)
        comment = _range(sid, "comment", item.get("comment"), n)
        if plan is None and execution is None:
            raise AnswerError(f"step {sid} has neither plan nor execution lines")
        prompt = item.get("prompt")
        if prompt is not None and not isinstance(prompt, str):
            raise AnswerError(f"step {sid}: prompt must be a string or null")
        if execution is not None and not (prompt and prompt.strip()):
            raise AnswerError(f"step {sid} has execution lines but no prompt")
        parts = [(name, r) for name, r in (("plan", plan), ("execution", execution), ("comment", comment)) if r]
        for (n1, r1), (n2, r2) in zip(parts, parts[1:]):
            if r2[0] <= r1[1]:
                raise AnswerError(f"step {sid}: {n1} [{r1[0]}, {r1[1]}] and {n2} [{r2[0]}, {r2[1]}] overlap or are "
                                  f"out of order (parts go plan, execution, comment)")
        for name, (a, b) in parts:
            for ln in range(a, b + 1):
                if ln in owner:
                    raise AnswerError(f"line {ln} is in {owner[ln]} and in step {sid} ({name})")
                owner[ln] = f"step {sid} ({name})"
        if steps and parts[0][1][0] <= max(r[1] for r in _ranges(steps[-1])):
            raise AnswerError(f"step {sid} starts at line {parts[0][1][0]}, before the end of step {steps[-1].id}; "
                              "steps must follow the text in order")
        description = item.get("description")
        steps.append(Step(id=sid, description=description.strip() if isinstance(description, str) else "",
                          plan=span_text(trace, lines, *plan) if plan else "",
                          prompt=prompt.strip() if execution is not None else None,
                          execution=span_text(trace, lines, *execution) if execution else None,
                          comment=span_text(trace, lines, *comment) if comment else None,
                          plan_lines=plan, execution_lines=execution, comment_lines=comment))
    missing = [ln.number for ln in lines if not ln.blank and ln.number not in owner]
    if missing:
        raise AnswerError(f"lines {_spans(missing)} are not in any step; every line must belong to one step")
    return steps


def _ranges(step: Step) -> list[tuple[int, int]]:
    return [r for r in (step.plan_lines, step.execution_lines, step.comment_lines) if r]


def parse_dag_answer(text: str | None, steps: list[Step]) -> dict[int, list[int]]:
    """Validate a DAG answer: a parent list for every step, only known and earlier steps, no cycle."""
    data = load_json_answer(text)
    try:
        parents = parse_parents(data, source="answer")
    except ArtifactError as e:
        raise AnswerError(str(e).removeprefix("answer: ")) from None
    try:
        check_dag([s.id for s in steps], parents, parents_earlier=True)
    except DagError as e:
        raise AnswerError(str(e)) from None
    return {s.id: sorted(set(parents[s.id]), key=parents[s.id].index) for s in steps}


# ---------------------------------------------------------------------------------------------- prompts
def extraction_messages(question: str, lines: list[Line]) -> list[dict]:
    user = f"Problem:\n{question.strip()}\n\nSolution, {len(lines)} numbered lines:\n{numbered(lines)}"
    return [{"role": "system", "content": EXTRACT_SYSTEM}, {"role": "user", "content": user}]


def _excerpt(text: str | None, limit: int) -> str:
    if not text:
        return "-"
    s = " ".join(text.split())
    if len(s) <= limit:
        return s
    half = limit // 2
    return s[:half] + " [...] " + s[-half:]


def dag_messages(question: str, steps: list[Step], excerpt_chars: int = 600) -> list[dict]:
    blocks = []
    for s in steps:
        rows = [f"Step {s.id}: {s.description or '(no description)'}", f"  Reasoning: {_excerpt(s.plan, excerpt_chars)}"]
        if s.execution is not None:
            rows.append(f"  Task: {s.prompt or '-'}")
            rows.append(f"  Work: {_excerpt(s.execution, excerpt_chars)}")
        if s.comment:
            rows.append(f"  Remark: {_excerpt(s.comment, excerpt_chars)}")
        blocks.append("\n".join(rows))
    user = f"Problem:\n{question.strip()}\n\nSteps:\n" + "\n\n".join(blocks)
    return [{"role": "system", "content": DAG_SYSTEM}, {"role": "user", "content": user}]


# ---------------------------------------------------------------------------------------------- re-ask loop
async def ask_until_valid(chat: CachedChat, endpoint: LLMEndpoint, input_hash: str, step: str,
                          messages: list[dict], parse: Callable[[str], T], max_attempts: int = 3) -> T:
    """Ask, validate with `parse`, and on an `AnswerError` ask again quoting the error, at most `max_attempts`
    times in all; then raise `Rejected(step, last error)`."""
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
    msgs = list(messages)
    for attempt in range(1, max_attempts + 1):
        answer = await chat(endpoint, input_hash, step, msgs)
        try:
            return parse(answer.text)
        except AnswerError as e:
            error = str(e)
        if answer.finish_reason == "length":
            # Asking again would be cut at the same limit: give up at once and say why.
            raise Rejected(step, "truncated", f"{error}; the answer was cut off at max_tokens "
                           f"({endpoint.params.max_tokens}); raise --max-tokens")
        if attempt == max_attempts:
            raise Rejected(step, "invalid_answer", f"{error} (after {attempt} attempts)")
        msgs = msgs + [{"role": "assistant", "content": answer.text or ""},
                       {"role": "user", "content": RETRY_TEMPLATE.format(error=error)}]
    raise AssertionError("unreachable")


async def extract_steps(chat: CachedChat, endpoint: LLMEndpoint, input_hash: str, question: str, trace: str,
                        lines: list[Line], max_attempts: int = 3) -> list[Step]:
    return await ask_until_valid(chat, endpoint, input_hash, "extract", extraction_messages(question, lines),
                                 lambda a: parse_steps_answer(a, trace, lines), max_attempts)


async def build_dag(chat: CachedChat, endpoint: LLMEndpoint, input_hash: str, question: str, steps: list[Step],
                    max_attempts: int = 3, excerpt_chars: int = 600) -> dict[int, list[int]]:
    return await ask_until_valid(chat, endpoint, input_hash, "dag", dag_messages(question, steps, excerpt_chars),
                                 lambda a: parse_dag_answer(a, steps), max_attempts)
