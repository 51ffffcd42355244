"""A live terminal view of one run (rich): stages, the planner and the executors running side by side with their
token counts, repairs as they happen; and the summary table printed when the run is over."""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from sprint.inference.calls import RunEvent
from sprint.inference.records import RunResult

_TAIL = 70
_MAX_ROWS = 40


@dataclass
class _Row:
    role: str
    stage: int | None
    prompt_id: str | None
    attempt: int
    start: float
    text: str = ""
    end: float | None = None
    error: str | None = None
    tokens: int = 0
    counted_len: int = -1


class LiveView:
    """A `RunObserver` that is also a rich renderable: pass it to `rich.live.Live` and to the run."""

    def __init__(self, count_tokens, title: str = "sprint run"):
        self.count_tokens = count_tokens
        self.title = title
        self.rows: dict[tuple, _Row] = {}
        self.repairs: list[str] = []
        self.t0 = time.perf_counter()
        self.finished = False

    def __call__(self, event: RunEvent) -> None:
        if event.kind == "repair":
            self.repairs.append(event.text)
            return
        if event.kind == "done":
            self.finished = True
            return
        rec = event.record
        if rec is None:
            return
        key = (rec.role, rec.stage, rec.prompt_id, rec.attempt, rec.start_s)
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = _Row(rec.role, rec.stage, rec.prompt_id, rec.attempt, time.perf_counter())
        if event.kind in ("call_text", "call_end"):
            row.text = event.text
        if event.kind == "call_end":
            row.end = time.perf_counter()
            row.error = rec.error
            row.tokens, row.counted_len = rec.generated_tokens, len(row.text)

    def _tokens(self, row: _Row) -> int:
        # Count at render time (a few times a second), not on every streamed delta.
        if row.counted_len != len(row.text):
            row.tokens, row.counted_len = self.count_tokens(row.text) if row.text else 0, len(row.text)
        return row.tokens

    def __rich__(self):
        now = time.perf_counter()
        table = Table(expand=True, show_edge=False, header_style="bold")
        table.add_column("stage", justify="right", width=5)
        table.add_column("call", width=14)
        table.add_column("status", width=9)
        table.add_column("tokens", justify="right", width=7)
        table.add_column("time", justify="right", width=7)
        table.add_column("latest text", ratio=1, no_wrap=True, overflow="ellipsis")
        rows = list(self.rows.values())[-_MAX_ROWS:]
        last_stage = None
        for r in rows:
            if last_stage is not None and r.stage != last_stage:
                table.add_section()
            last_stage = r.stage
            if r.error:
                status = Text("cancelled" if r.error == "cancelled" else "failed", style="red")
            elif r.end is None:
                status = Text("running", style="yellow")
            else:
                status = Text("done", style="green")
            call = r.role if r.prompt_id is None else f"{r.role} {r.prompt_id}"
            if r.attempt > 1:
                call += f" #{r.attempt}"
            tail = " ".join(r.text.split())[-_TAIL:]
            elapsed = (r.end or now) - r.start
            table.add_row("-" if r.stage is None else str(r.stage), call, status, str(self._tokens(r)),
                          f"{elapsed:.1f}s", Text(tail, style="dim"))
        running = sum(1 for r in self.rows.values() if r.end is None)
        head = Text(f"{len(self.rows)} call(s), {running} running, {now - self.t0:.1f}s", style="bold")
        parts = [head, table]
        if self.repairs:
            parts.append(Text("repairs: " + "; ".join(self.repairs[-5:]), style="magenta"))
        return Panel(Group(*parts), title=self.title, border_style="blue")


def summary_table(result: RunResult) -> Table:
    """The numbers of a finished run."""
    table = Table(title=f"{result.method} result", show_header=False)
    table.add_column("metric", style="bold")
    table.add_column("value", overflow="fold")
    executors = sum(1 for c in result.calls if c.role == "executor")
    rows = [
        ("answer", "(none)" if result.answer is None else result.answer),
        ("stages", str(result.stages)),
        ("model calls", f"{len(result.calls)}" + (f" ({executors} executor)" if executors else "")),
        ("sequential tokens (format metric)", f"{result.sequential_tokens:,}"),
        ("critical-path tokens (as run)", f"{result.critical_path_tokens:,}"),
        ("total tokens (format metric)", f"{result.total_tokens:,}"),
        ("generated tokens (all calls)", f"{result.generated_tokens:,}"),
        ("wall clock", f"{result.wall_clock_s:.2f} s"),
        ("repairs", str(len(result.repairs)) + ("" if not result.repairs else ": " + ", ".join(
            sorted({r["kind"] for r in result.repairs})))),
    ]
    for k, v in rows:
        table.add_row(k, v)
    return table
