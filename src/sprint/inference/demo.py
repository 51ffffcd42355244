"""`sprint demo`: the bundled Countdown models side by side, offline on the CPU.

The SPRINT model solves a problem while the terminal shows its stages and executors running side by side; then the
sequential model (same size, same data, same training budget) solves the same problem; a table compares answers,
sequential tokens and wall-clock.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from sprint.format import tags as T
from sprint.models import BUNDLED, default_settings, resolve_model

PAIRS = (("countdown-sprint", "sprint"), ("countdown-sequential", "sequential"))


@dataclass
class DemoRow:
    model: str
    method: str
    answer: str | None
    correct: bool
    verdict: str
    sequential_tokens: int
    total_tokens: int
    wall_clock_s: float


def pick_question(question: str | None, seed: int) -> str:
    """The question in the models' phrasing: the user's (plain words), or a held-out test problem from `seed`; the
    numbers in the order the demo's models were trained on (as `sprint eval` asks them)."""
    from sprint.models import countdown_question_order
    from sprint.tasks.countdown.loader import item_from_question, load_countdown

    order = countdown_question_order([model for model, _ in PAIRS])
    if question:
        return item_from_question(question, question_order=order).question
    return load_countdown("test", 1, seed, question_order=order)[0].question


async def _solve_live(model: str, method: str, question: str, console, show: bool):
    from rich.live import Live

    from sprint.backends import load_backend
    from sprint.inference.app import METHODS, make_config
    from sprint.inference.live import LiveView

    # The fast mode (one batched call per layer for all decoding streams), not the CPU's default exact mode, which
    # computes every stream on its own so that a request's output never depends on its batch: a demo needs no such
    # guarantee, and the fast mode gave the same trajectories in less time (`benchmarks/bench_demo_modes.py`,
    # BENCHMARKS.md).
    backend = load_backend(model, None, device="cpu", exact=False)
    config = make_config(method, **default_settings(model, method))
    view = LiveView(backend.count_tokens, title=f"{model} · {method}")
    try:
        if show:
            with Live(view, console=console, refresh_per_second=8):
                result = await METHODS[method](question, backend, config, backend.tokenizer, id=model,
                                               observer=view)
        else:
            result = await METHODS[method](question, backend, config, backend.tokenizer, id=model)
    finally:
        aclose = getattr(backend, "aclose", None)
        if aclose is not None:
            await aclose()
    return result


def run_demo(question: str | None = None, seed: int = 0, *, live: bool = True, console=None) -> list[DemoRow]:
    """Solve one Countdown problem with both bundled models; print the runs and a comparison; return the rows."""
    from rich.console import Console
    from rich.markup import escape
    from rich.panel import Panel
    from rich.table import Table

    from sprint.tasks.countdown.loader import check_countdown, item_from_question

    console = console or Console()
    for name in BUNDLED:
        resolve_model(name)  # fail early and clearly if a bundled model is missing
    q = pick_question(question, seed)
    item = item_from_question(q)
    console.print(Panel(q, title="question", border_style="cyan"))
    rows = []
    for model, method in PAIRS:
        result = asyncio.run(_solve_live(model, method, q, console, live))
        verdict = check_countdown(result.trajectory, item)
        console.print(Panel(result.trajectory.split(T.close_tag(T.QUESTION), 1)[-1].strip()[-2500:],
                            title=f"{model}: trajectory", border_style="dim"))
        rows.append(DemoRow(model, method, result.answer, verdict.ok, verdict.reason, result.sequential_tokens,
                            result.total_tokens, result.wall_clock_s))
    table = Table(title="SPRINT vs sequential on the same problem (same model size, data and training budget)")
    # No answer column: on an 80-column terminal rich squeezed it to nothing. The answers go on their own lines below.
    table.add_column("model", no_wrap=True)
    for col in ("correct", "sequential\ntokens", "total\ntokens", "wall-clock\n(s)"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in rows:
        table.add_row(r.model, "yes" if r.correct else "no", str(r.sequential_tokens), str(r.total_tokens),
                      f"{r.wall_clock_s:.2f}")
    console.print(table)
    for r in rows:
        # Without a boxed answer the grader's reason is about the whole trajectory, not worth a line.
        answer = escape(r.answer) if r.answer else "no answer"
        verdict = "correct" if r.correct else f"wrong: {escape(r.verdict)}" if r.verdict and r.answer else "wrong"
        console.print(f"{r.model}: {answer} [dim]({verdict})[/dim]", soft_wrap=True)  # one line, greppable
    # One problem says little: on a short one SPRINT's parallel branches can cost more than the sequential search
    # that found the answer early (the default problem is such a case), and on a CPU every executor's token costs
    # compute, so the wall-clock follows the total tokens. Point at the measurement over many problems.
    console.print("[dim]One problem only. SPRINT's savings grow with a problem's length, and its wall-clock gains "
                  "need a GPU (where a step of several streams costs little more than one). Many problems:[/dim]",
                  soft_wrap=True)
    console.print(f"[dim]  {eval_command(seed)}[/dim]", soft_wrap=True)
    return rows


def eval_command(seed: int, n: int = 100) -> str:
    """The `sprint eval` command that compares the pair on `n` test problems of `seed` (the demo's among them)."""
    pair = " ".join(f"--model {model} --method {method}" for model, method in PAIRS)
    return f"sprint eval --task countdown --n {n} --seed {seed} {pair} --out runs/eval_pair_s{seed}"
