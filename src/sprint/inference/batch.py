"""Running many questions concurrently with crash-safe, resumable output.

`run_batch` appends each finished `RunResult` to the output JSONL the moment it is done (write, flush, fsync), so
a crash loses at most the questions in flight. On restart, `finished_ids` reads the output, repairs a last line
cut off by the crash, and the questions already there are skipped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable, Sequence

from sprint.inference.records import RunResult
from sprint.jsonl import iter_jsonl

log = logging.getLogger(__name__)


@dataclass
class BatchItem:
    """One question of a batch: its id, its text and the input line it came from."""

    id: str
    question: str
    line: int


@dataclass
class BatchSummary:
    total: int
    skipped: int                   # already in the output before this run
    done: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)   # (id, error); not written, a rerun retries them
    wall_clock_s: float = 0.0
    out_path: str = ""


#: Field names tried, in order, when none is given: MATH-500's first, then the common ones.
QUESTION_FIELDS = ("problem", "question", "prompt")
ID_FIELDS = ("unique_id", "id")


def load_items(path: str | Path, question_field: str | None = None, id_field: str | None = None) -> list[BatchItem]:
    """Questions from a JSONL file. Every line needs `question_field` and `id_field` (ids must be unique); each not
    given is the first of `QUESTION_FIELDS` / `ID_FIELDS` that the first line has."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    items: list[BatchItem] = []
    seen: dict[str, int] = {}
    for n, rec in iter_jsonl(path):
        if not items:
            question_field = question_field or next((f for f in QUESTION_FIELDS if f in rec), QUESTION_FIELDS[0])
            id_field = id_field or next((f for f in ID_FIELDS if f in rec), ID_FIELDS[0])
        for fld in (question_field, id_field):
            if fld not in rec:
                flag = "--question-field" if fld == question_field else "--id-field"
                raise ValueError(f"{path}:{n}: no field {fld!r} (fields: {', '.join(rec)}; choose with {flag})")
        q, i = rec[question_field], str(rec[id_field])
        if not isinstance(q, str) or not q.strip():
            raise ValueError(f"{path}:{n}: field {question_field!r} must be a non-empty string")
        if i in seen:
            raise ValueError(f"{path}:{n}: id {i!r} already used on line {seen[i]}")
        seen[i] = n
        items.append(BatchItem(i, q, n))
    return items


def finished_ids(out_path: str | Path) -> set[str]:
    """Ids already in the output file. A last line cut off by a crash is removed from the file (it is redone);
    a broken line elsewhere is an error (the file is not ours to guess about)."""
    path = Path(out_path)
    if not path.exists():
        return set()
    data = path.read_bytes()
    lines = data.split(b"\n")
    ids: set[str] = set()
    keep = len(data)
    for n, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        last = n == len(lines)  # no newline after it: the write was cut off
        try:
            rec = json.loads(raw)
            ids.add(str(rec["id"]))
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
            if not last:
                raise ValueError(f"{path}:{n}: not a result line; fix or remove it before resuming") from None
            keep = len(data) - len(raw)
            log.warning("%s: dropping a truncated last line (%d bytes); its question will be redone", path, len(raw))
            continue
        if last:
            keep = len(data) + 1  # a complete record without its newline: add the newline
    if keep < len(data):
        with path.open("r+b") as f:
            f.truncate(keep)
    elif keep > len(data):
        with path.open("ab") as f:
            f.write(b"\n")
    return ids


def append_result(f, result: RunResult) -> None:
    """One result line, on disk before this returns."""
    f.write(result.to_json() + "\n")
    f.flush()
    os.fsync(f.fileno())


async def run_batch(items: Sequence[BatchItem], solve_one: Callable[[BatchItem], Awaitable[RunResult]],
                    out_path: str | Path, *, concurrency: int = 8, progress: bool = True,
                    on_result: Callable[[RunResult], None] | None = None) -> BatchSummary:
    """Solve every item not yet in `out_path`, `concurrency` at a time, appending results as they finish.

    An item whose `solve_one` raises is reported in the summary and not written, so a rerun retries it. Cancelling
    this coroutine cancels the items in flight; everything finished is already on disk.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    start = time.perf_counter()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    done_ids = finished_ids(out_path)
    todo = [it for it in items if it.id not in done_ids]
    summary = BatchSummary(total=len(items), skipped=len(items) - len(todo), out_path=str(out_path))
    sem = asyncio.Semaphore(concurrency)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(items), initial=summary.skipped, desc="questions", unit="q", disable=not progress,
               dynamic_ncols=True)
    with out_path.open("a", encoding="utf-8") as f:

        async def one(item: BatchItem) -> None:
            async with sem:
                try:
                    result = await solve_one(item)
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    log.error("question %s (line %d) failed: %s: %s", item.id, item.line, type(e).__name__, e)
                    summary.failed.append((item.id, f"{type(e).__name__}: {e}"))
                    bar.update(1)
                    return
            if result.id is None:
                result.id = item.id
            append_result(f, result)
            summary.done += 1
            bar.update(1)
            if on_result is not None:
                on_result(result)

        tasks = [asyncio.create_task(one(it)) for it in todo]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            bar.close()
    summary.wall_clock_s = time.perf_counter() - start
    return summary
