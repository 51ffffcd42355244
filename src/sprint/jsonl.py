"""Reading JSONL files of objects: the one place that skips blank lines, parses each line and names the file and
line in its errors. Callers check the fields themselves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator


def iter_jsonl(path: str | Path, *, label: str | None = None) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of `path` (numbered from 1, blank lines counted).

    Raises ValueError "<label>:<line>: not valid JSON (<msg>)" or "<label>:<line>: expected a JSON object, got
    <type>"; `label` defaults to the path."""
    name = str(path) if label is None else label
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{name}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{name}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj
