"""A scripted stand-in for the extraction and DAG models: answers computed from the prompt, plus malformed ones.

`answer_for(messages, faults)` reads the numbered lines (or the step list) out of the prompt we send and returns a
valid JSON answer: steps of up to five lines (first line plan, the rest execution), and a DAG where every step
after the first depends only on step 1 (wide: a high ratio). `faults` maps a substring of the question to a list
of faults used on successive attempts (the last one repeats): "extract:" + one of bad_json, empty, overlap,
missing, out_of_bounds, no_prompt, fenced; "dag:" + one of bad_json, empty, cycle, unknown_step, later_parent,
missing_entry, chain; or "ok".
"""

from __future__ import annotations

import json
import re

from sprint.curate.extract import DAG_SYSTEM, EXTRACT_SYSTEM

_LINE_RE = re.compile(r"^\[(\d+)\] ", re.MULTILINE)
_STEP_RE = re.compile(r"^Step (\d+):", re.MULTILINE)


def _question(messages: list[dict]) -> str:
    user = messages[1]["content"]
    return user.split("\n\n", 1)[0]


def _attempt(messages: list[dict]) -> int:
    return sum(1 for m in messages if m["role"] == "assistant")


def valid_steps(n_lines: int, size: int = 5) -> list[dict]:
    steps, a, sid = [], 1, 1
    while a <= n_lines:
        b = min(n_lines, a + size - 1)
        step = {"id": sid, "description": f"lines {a}-{b}", "plan": [a, a], "prompt": None, "execution": None,
                "comment": None}
        if b > a:
            step["execution"] = [a + 1, b]
            step["prompt"] = f"Carry out the work of lines {a + 1} to {b}."
        steps.append(step)
        a, sid = b + 1, sid + 1
    return steps


def extraction_answer(messages: list[dict], fault: str = "ok") -> str:
    n = len(_LINE_RE.findall(messages[1]["content"]))
    steps = valid_steps(n)
    if fault == "ok":
        return json.dumps({"steps": steps})
    if fault == "fenced":
        return "```json\n" + json.dumps({"steps": steps}) + "\n```"
    if fault == "bad_json":
        return '{"steps": [{"id": 1, "plan": [1, 2],'
    if fault == "empty":
        return ""
    if fault == "overlap":
        steps[0]["execution"] = [steps[0]["plan"][0], steps[0]["execution"][1]] if steps[0]["execution"] else None
        if steps[0]["execution"] is None:
            steps[0]["execution"], steps[0]["prompt"] = [1, 1], "x"
        return json.dumps({"steps": steps})
    if fault == "missing":
        return json.dumps({"steps": steps[:-1] or [{"id": 1, "plan": None, "execution": None}]})
    if fault == "out_of_bounds":
        steps[-1]["plan"] = [steps[-1]["plan"][0], n + 7]
        steps[-1]["execution"], steps[-1]["prompt"] = None, None
        return json.dumps({"steps": steps})
    if fault == "no_prompt":
        for s in steps:
            if s["execution"]:
                s["prompt"] = None
                break
        return json.dumps({"steps": steps})
    raise ValueError(f"unknown extraction fault {fault!r}")


def dag_answer(messages: list[dict], fault: str = "ok") -> str:
    ids = [int(x) for x in _STEP_RE.findall(messages[1]["content"])]
    parents = {str(i): ([] if i == 1 else [1]) for i in ids}
    if fault == "chain":
        parents = {str(i): ([] if i == 1 else [i - 1]) for i in ids}
    elif fault == "cycle":
        parents["1"] = [ids[-1]] if len(ids) > 1 else [1]
        if len(ids) > 1:
            parents[str(ids[-1])] = [1]
    elif fault == "unknown_step":
        parents[str(ids[-1])] = [ids[-1] + 40]
    elif fault == "later_parent":
        if len(ids) > 2:
            parents["2"] = [3]
        else:
            parents["1"] = [2] if len(ids) > 1 else [9]
    elif fault == "missing_entry":
        parents.pop(str(ids[-1]))
    elif fault == "bad_json":
        return "parents: 1 -> 2"
    elif fault == "empty":
        return ""
    elif fault != "ok":
        raise ValueError(f"unknown DAG fault {fault!r}")
    return json.dumps({"parents": parents})


def answer_for(messages: list[dict], faults: dict[str, list[str]] | None = None) -> str:
    """The scripted answer to one chat request (the system prompt tells extraction from DAG).

    A fault is "extract:<name>" or "dag:<name>"; the k-th attempt of a conversation uses the k-th fault listed for
    the question (the last one repeats); a fault for the other step means a valid answer.
    """
    question = _question(messages)
    plan = next((v for k, v in (faults or {}).items() if k in question), ["ok"])
    fault = plan[min(_attempt(messages), len(plan) - 1)]
    step, _, name = fault.partition(":")
    system = messages[0]["content"]
    if system == EXTRACT_SYSTEM:
        return extraction_answer(messages, name if step == "extract" else "ok")
    if system == DAG_SYSTEM:
        return dag_answer(messages, name if step == "dag" else "ok")
    raise AssertionError("unexpected system prompt")
