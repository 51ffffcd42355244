"""Tag names, tag builders, tag regexes and generation stop strings of the SPRINT format.

This is the only place in the package that spells a tag. Everything else (curation, inference, training,
evaluation) builds tags through these helpers, so that what a model is trained on and what it is prompted with
at inference time are the same bytes.
"""

from __future__ import annotations

import re

QUESTION = "Question"
THINK = "think"
FINAL_ANSWER = "Final_answer"
PLAN = "Plan"
EXECUTION_BLOCK = "Execution"
PROMPT = "prompt"
EXECUTION = "execution"

#: Body of an execution block whose plan had no prompt.
NO_PROMPT_TEXT = "No prompt to execute."
#: Separator the curation pipeline writes between the plans of two steps in one stage.
STEP_SEPARATOR = "-----"
#: Prefix of the line that names the executions a step builds on ("Based on execution_1.1, execution_1.2:").
BASED_ON_PREFIX = "Based on "


def open_tag(name: str) -> str:
    return f"<{name}>"


def close_tag(name: str) -> str:
    return f"</{name}>"


def plan_name(stage: int) -> str:
    return f"{PLAN}_{stage}"


def execution_block_name(stage: int) -> str:
    return f"{EXECUTION_BLOCK}_{stage}"


def prompt_name(stage: int, index: int) -> str:
    return f"{PROMPT}_{stage}.{index}"


def execution_name(stage: int, index: int) -> str:
    return f"{EXECUTION}_{stage}.{index}"


def execution_ref(stage: int, index: int) -> str:
    """How plans refer to an earlier execution in a "Based on ..." line."""
    return execution_name(stage, index)


def based_on_line(refs: list[tuple[int, int]]) -> str:
    """The line that opens a step which builds on earlier executions."""
    return BASED_ON_PREFIX + ", ".join(execution_ref(s, j) for s, j in refs) + ":"


# ---------------------------------------------------------------------------------------------- regexes
# One regex for every tag of the format. Group "slash" is "/" for closing tags; "kind" names the tag family;
# "stage" and "index" carry the numbers. Anything that does not match (for example `a<b>c` in math) is text.
TAG_RE = re.compile(
    r"<(?P<slash>/?)(?P<kind>Question|think|Final_answer|Plan|Execution|prompt|execution)"
    r"(?:_(?P<stage>\d+)(?:\.(?P<index>\d+))?)?>"
)

BASED_ON_RE = re.compile(r"^\s*Based on ((?:execution_\d+\.\d+)(?:\s*,\s*(?:and\s+)?execution_\d+\.\d+)*)\s*:\s*$",
                         re.MULTILINE)
EXECUTION_REF_RE = re.compile(r"execution_(\d+)\.(\d+)")
BOXED_HINT = "\\boxed"


def parse_based_on(line: str) -> list[tuple[int, int]]:
    """The execution references of a "Based on ..." line, or [] when the line is not one."""
    m = BASED_ON_RE.match(line)
    if not m:
        return []
    return [(int(a), int(b)) for a, b in EXECUTION_REF_RE.findall(m.group(1))]


def strip_format_tags(text: str) -> str:
    """Remove the format's own tags (and only them) from text."""
    return TAG_RE.sub("", text)


# ---------------------------------------------------------------------------------------------- stop strings
def planner_stop_strings(stage: int) -> list[str]:
    """Where a planner generation for stage `stage` must stop.

    The planner writes its plan (with prompts) and stops at the end of the plan, or writes the final answer and
    stops at its end. It must never write an execution block itself: executors do that.
    """
    return [close_tag(plan_name(stage)), close_tag(FINAL_ANSWER), open_tag(execution_block_name(stage))]


def executor_stop_strings(stage: int, index: int) -> list[str]:
    """Where an executor generation for prompt `stage.index` must stop."""
    return [close_tag(execution_name(stage, index)), close_tag(execution_block_name(stage)),
            open_tag(plan_name(stage + 1))]


def prompt_close_pattern(stage: int) -> re.Pattern[str]:
    """Matches the closing tag of any prompt of `stage` (used for eager dispatch while streaming)."""
    return re.compile(rf"</{PROMPT}_{stage}\.(\d+)>")
