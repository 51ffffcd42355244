"""Reading step and DAG files: the released SPRINT artifacts and our own JSON, into `Step`s and parent maps.

Step files come in three shapes:

* the paper's step-extraction answers (markdown, one `### Component N (Lines a-b)` section per step with
  `- **Plan:** Lines a-b`, `- **Prompt:** ...`, `- **Execution:** ...`, `- **Comment:** ...` bullets): line
  ranges only, resolved against the numbered trace when one is given;
* the paper's "component inline" files (the same steps with `<plan>`/`<prompt>`/`<execution>` blocks of text);
* our JSON: `{"steps": [{"id", "description", "plan", "prompt", "execution", "comment"}]}` with texts, or with
  `plan_lines`/`execution_lines`/`comment_lines` ranges (`[a, b]`, 1-based inclusive) to resolve against a trace.

DAG files are a parent dictionary `{"<id>": [<parent id>, ...]}` (the paper's format and ours), optionally wrapped
as `{"parents": {...}}`. Errors name the file, the step and the field.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from sprint.curate.lines import Line, span_text, split_lines
from sprint.curate.packing import Step

Range = tuple[int, int]

_SECTION_RE = re.compile(r"^#{2,4}\s*Component\s+(\d+)[^\n]*$", re.MULTILINE)
_BULLET_RE = re.compile(r"^\s*[-*]\s*\*\*(Description|Plan|Prompt|Execution|Comment)\s*:?\*\*\s*:?\s*(.*?)\s*$",
                        re.MULTILINE | re.IGNORECASE)
# Blocks of the inline files; the names are read generically (the field names, not format tags).
_BLOCK_RE = re.compile(r"<(\w+)>\n(.*?)\n</\1>", re.DOTALL)
_NUM_RE = re.compile(r"\d+")


class ArtifactError(ValueError):
    """A step or DAG file that cannot be read: names the file and the step."""


def parse_range(value: str | None) -> Range | None:
    """"Lines 3-7" -> (3, 7); "Line 4" / "Lines 116" -> (4, 4); "Lines not found" / "None" -> None.

    Like the released reader, a value with more numbers ("Lines 3-5, 8") keeps the first two.
    """
    if value is None:
        return None
    nums = [int(n) for n in _NUM_RE.findall(value)]
    if not nums:
        return None
    return (nums[0], nums[1]) if len(nums) > 1 else (nums[0], nums[0])


def _text_or_none(v: str | None) -> str | None:
    if v is None:
        return None
    v = v.strip()
    return None if v in ("", "None") else v


def _sections(text: str, source: str) -> list[tuple[int, str]]:
    """(component number, body) of every '### Component N' section of a paper artifact, in order."""
    heads = list(_SECTION_RE.finditer(text))
    if not heads:
        raise ArtifactError(f"{source}: no '### Component N' sections")
    ends = [h.start() for h in heads[1:]] + [len(text)]
    return [(int(h.group(1)), text[h.end():end]) for h, end in zip(heads, ends)]


def parse_component_markdown(text: str, *, source: str = "<text>") -> list[dict]:
    """The sections of a paper step-extraction answer: [{"id", "description", "prompt", "plan_lines", ...}]."""
    out = []
    for sid, body in _sections(text, source):
        fields = {m.group(1).lower(): m.group(2) for m in _BULLET_RE.finditer(body)}
        for need in ("plan", "execution"):
            if need not in fields:
                raise ArtifactError(f"{source}: component {sid} has no '{need.capitalize()}' bullet")
        out.append({"id": sid, "description": (fields.get("description") or "").strip(),
                    "prompt": _text_or_none(fields.get("prompt")),
                    "plan_lines": parse_range(fields.get("plan")),
                    "execution_lines": parse_range(fields.get("execution")),
                    "comment_lines": parse_range(fields.get("comment"))})
    return out


def parse_component_inline(text: str, *, source: str = "<text>") -> list[dict]:
    """The sections of a paper inline file: [{"id", "description", "plan", "prompt", "execution"}] (texts)."""
    out = []
    for sid, body in _sections(text, source):
        blocks = {m.group(1).lower(): m.group(2) for m in _BLOCK_RE.finditer(body)}
        out.append({"id": sid, "description": (blocks.get("description") or "").strip(),
                    "plan": _text_or_none(blocks.get("plan")), "prompt": _text_or_none(blocks.get("prompt")),
                    "execution": _text_or_none(blocks.get("execution"))})
    return out


def _resolve(trace: str, lines: list[Line], r: Range | None, sid: int, what: str, source: str) -> str | None:
    if r is None:
        return None
    try:
        return span_text(trace, lines, r[0], r[1])
    except ValueError as e:
        raise ArtifactError(f"{source}: step {sid} {what}: {e}") from None


def steps_from_records(records: list[dict], *, trace: str | None = None, source: str = "<steps>") -> list[Step]:
    """Build Steps from dicts holding texts and/or line ranges (ranges are resolved against `trace`)."""
    lines = split_lines(trace) if trace is not None else None
    steps = []
    for k, r in enumerate(records):
        if not isinstance(r, dict) or "id" not in r:
            raise ArtifactError(f"{source}: step #{k + 1} is not an object with an 'id'")
        try:
            sid = int(r["id"])
        except (TypeError, ValueError):
            raise ArtifactError(f"{source}: step #{k + 1} has a non-integer id {r['id']!r}") from None
        ranges = {}
        for f in ("plan_lines", "execution_lines", "comment_lines"):
            v = r.get(f)
            if isinstance(v, str):
                v = parse_range(v)
            elif v is not None:
                if not (isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) for x in v)):
                    raise ArtifactError(f"{source}: step {sid} field {f} must be [first, last], got {v!r}")
                v = (int(v[0]), int(v[1]))
            ranges[f] = v
        texts = {f: _text_or_none(r.get(f)) for f in ("plan", "execution", "comment")}
        if lines is not None:
            for f in ("plan", "execution", "comment"):
                if texts[f] is None:
                    texts[f] = _resolve(trace, lines, ranges[f + "_lines"], sid, f, source)
        elif texts["execution"] is None and ranges["execution_lines"] is not None:
            texts["execution"] = ""  # ranges only: the step has an execution whose text is not loaded
        steps.append(Step(id=sid, description=str(r.get("description") or ""), plan=texts["plan"] or "",
                          prompt=_text_or_none(r.get("prompt")) if texts["execution"] is not None else None,
                          execution=texts["execution"],
                          comment=texts["comment"], plan_lines=ranges["plan_lines"],
                          execution_lines=ranges["execution_lines"], comment_lines=ranges["comment_lines"]))
    return steps


def merge_inline_texts(steps: list[Step], inline: list[dict]) -> list[Step]:
    """Fill the plan/execution texts of range-only steps from the paper's inline file of the same answer."""
    by_id = {r["id"]: r for r in inline}
    for s in steps:
        r = by_id.get(s.id)
        if r is None:
            continue
        if not s.plan and r.get("plan"):
            s.plan = r["plan"]
        if s.execution == "" and r.get("execution"):
            s.execution = r["execution"]
    return steps


def load_steps(path: str | Path, *, trace: str | None = None, inline: str | Path | None = None) -> list[Step]:
    """Read a step file of any of the supported shapes (see the module docstring)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    src = str(path)
    if text.lstrip().startswith(("{", "[")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ArtifactError(f"{src}: invalid JSON at line {e.lineno}: {e.msg}") from None
        records = data.get("steps") if isinstance(data, dict) else data
        if not isinstance(records, list):
            raise ArtifactError(f"{src}: expected a list of steps or {{\"steps\": [...]}}")
        return steps_from_records(records, trace=trace, source=src)
    if _BLOCK_RE.search(text) and not _BULLET_RE.search(text):
        return steps_from_records(parse_component_inline(text, source=src), source=src)
    steps = steps_from_records(parse_component_markdown(text, source=src), trace=trace, source=src)
    if inline is not None and trace is None:
        inline_path = Path(inline)
        merge_inline_texts(steps, parse_component_inline(inline_path.read_text(encoding="utf-8"),
                                                         source=str(inline_path)))
    return steps


def parse_parents(data, *, source: str = "<dag>") -> dict[int, list[int]]:
    """A parent dictionary (JSON-decoded) as {int id: [int parent, ...]}."""
    if isinstance(data, dict) and isinstance(data.get("parents"), dict):
        data = data["parents"]
    if not isinstance(data, dict):
        raise ArtifactError(f"{source}: expected an object mapping step ids to parent lists")
    out: dict[int, list[int]] = {}
    for k, v in data.items():
        try:
            sid = int(k)
        except (TypeError, ValueError):
            raise ArtifactError(f"{source}: step id {k!r} is not an integer") from None
        if not isinstance(v, list):
            raise ArtifactError(f"{source}: parents of step {sid} must be a list, got {v!r}")
        try:
            out[sid] = [int(p) for p in v]
        except (TypeError, ValueError):
            raise ArtifactError(f"{source}: parents of step {sid} must be integers, got {v!r}") from None
    return out


def load_dag(path: str | Path) -> dict[int, list[int]]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
    return parse_parents(data, source=str(path))


def pack_files(steps_path: str | Path, dag_path: str | Path, *, trace_path: str | Path | None = None,
               inline_path: str | Path | None = None, fold_threshold: int = 3, width: int | None = None,
               min_ratio: float | None = None, max_stages: int | None = None):
    """Read a step file and a DAG file, fold short executions and pack (what `sprint curate pack` prints)."""
    from sprint.curate.packing import DEFAULT_MAX_STAGES, DEFAULT_MIN_RATIO, fold_short_executions, pack

    trace = Path(trace_path).read_text(encoding="utf-8") if trace_path else None
    steps = fold_short_executions(load_steps(steps_path, trace=trace, inline=inline_path), fold_threshold)
    return pack(steps, load_dag(dag_path), width,
                min_ratio=DEFAULT_MIN_RATIO if min_ratio is None else min_ratio,
                max_stages=DEFAULT_MAX_STAGES if max_stages is None else max_stages)
