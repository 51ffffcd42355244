"""What `sprint run` does: pick the method and its config, load the backend, run one question live or a JSONL file
as a resumable batch. The command module only turns arguments into `RunOptions`."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from sprint.inference.baselines import (BaselineConfig, solve_self_consistency, solve_sequential,
                                        solve_skeleton_of_thought)
from sprint.inference.orchestrator import SprintConfig, solve
from sprint.models import default_settings, question_adapter

log = logging.getLogger(__name__)

#: Method name -> solve function with the signature of `sprint.inference.solve`.
METHODS = {"sprint": solve, "sequential": solve_sequential, "sc": solve_self_consistency,
           "sot": solve_skeleton_of_thought}
ALIASES = {"self-consistency": "sc", "skeleton-of-thought": "sot"}


def method_name(method: str) -> str:
    m = ALIASES.get(method, method)
    if m not in METHODS:
        raise ValueError(f"--method must be one of {', '.join(METHODS)} (or {', '.join(ALIASES)}), got {method!r}")
    return m


def make_config(method: str, **overrides) -> SprintConfig | BaselineConfig:
    """The config of `method` with the given settings (None = default). Settings that do not apply to the
    method are an error, so a typo or a misplaced flag is not silently ignored."""
    method = method_name(method)
    given = {k: v for k, v in overrides.items() if v is not None}
    if method == "sprint":
        temp = given.pop("temperature", None)
        top_p = given.pop("top_p", None)
        if temp is not None:
            given.setdefault("planner_temperature", temp)
            given.setdefault("executor_temperature", temp)
        if top_p is not None:
            given.setdefault("planner_top_p", top_p)
            given.setdefault("executor_top_p", top_p)
        cls = SprintConfig
    else:
        cls = BaselineConfig
        if method == "sc":
            given.setdefault("temperature", 0.7)
    names = {f for f in cls.__dataclass_fields__}
    wrong = sorted(set(given) - names)
    if wrong:
        raise ValueError(f"setting(s) {', '.join(wrong)} do not apply to --method {method}")
    return cls(**given)


@dataclass
class RunOptions:
    """Everything `sprint run` was asked to do."""

    question: str | None = None
    input: str | None = None
    out: str | None = None
    model: str | None = None
    base_urls: list[str] = field(default_factory=list)
    method: str = "sprint"
    settings: dict = field(default_factory=dict)   # passed to `make_config`
    concurrency: int = 8
    question_field: str | None = None  # None: found in the file (`sprint.inference.batch.load_items`)
    id_field: str | None = None
    tokenizer: str | None = None
    progress: bool = True


def question_id(question: str) -> str:
    return "q-" + hashlib.sha256(question.encode("utf-8")).hexdigest()[:12]


def _load_tokenizer(name: str | None):
    """The tokenizer that decides the prompt layout (chat template or plain) and counts tokens, as in training."""
    if not name:
        return None
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(name)
    except Exception as e:  # a served model name that is not a tokenizer we can load
        print(f"sprint run: warning: no tokenizer for {name!r} ({type(e).__name__}); using the plain <Question> "
              "layout and estimated token counts. Pass --tokenizer if the model has one.", file=sys.stderr)
        return None


def _load_backend(opts: RunOptions):
    """(backend, layout tokenizer): the in-process backend on a local model, or the HTTP backend on --base-url."""
    from sprint.backends import BackendError, load_backend

    try:
        if not opts.base_urls:
            backend = load_backend(opts.model, None)
            return backend, _load_tokenizer(opts.tokenizer) if opts.tokenizer else backend.tokenizer
        model = opts.model or load_backend(None, opts.base_urls).model   # the one model the server lists
        tokenizer = _load_tokenizer(opts.tokenizer or model)
        return load_backend(model, opts.base_urls, tokenizer=tokenizer), tokenizer
    except BackendError as e:
        raise ValueError(str(e)) from None


def run_command(opts: RunOptions) -> int:
    """`sprint run`: one question shown live, or a JSONL batch with a progress bar. Returns the exit status."""
    if bool(opts.question) == bool(opts.input):
        raise ValueError("give either a QUESTION or --input FILE.jsonl (not both)")
    if opts.input and not opts.out:
        raise ValueError("--input needs --out results.jsonl (results are appended there and resumed from)")
    defaulted = not opts.model and not opts.base_urls
    if defaulted:
        from sprint.models import DEFAULT_MODEL

        opts.model = DEFAULT_MODEL   # the bundled Countdown model: works offline on a fresh machine
    method = method_name(opts.method)
    settings = {**default_settings(opts.model, method), **{k: v for k, v in opts.settings.items() if v is not None}}
    config = make_config(method, **settings)
    adapt = question_adapter(opts.model)
    if opts.question and adapt is not None:
        # Bundled task models were trained on one phrasing: rewrite the plain-words question into it.
        try:
            opts.question = adapt(opts.question)
        except ValueError as e:
            if defaulted:
                raise ValueError(f"no --model given, and the bundled default model ({opts.model}) only answers "
                                 f"Countdown questions ({e}); give --model PATH (or --base-url URL) for other "
                                 "questions") from None
            raise
    backend, tokenizer = _load_backend(opts)
    if opts.question:
        return asyncio.run(_one(opts, method, config, backend, tokenizer))
    return asyncio.run(_many(opts, method, config, backend, tokenizer))


async def _close(backend) -> None:
    aclose = getattr(backend, "aclose", None)
    if aclose is not None:
        await aclose()


async def _one(opts: RunOptions, method: str, config, backend, tokenizer) -> int:
    from rich.console import Console
    from rich.live import Live
    from rich.panel import Panel

    from sprint.inference.batch import append_result
    from sprint.inference.live import LiveView, summary_table

    console = Console()
    name = opts.model or getattr(backend, "model", "")
    view = LiveView(backend.count_tokens, title=f"sprint run · {method} · {name}")
    try:
        with Live(view, console=console, refresh_per_second=8):
            result = await METHODS[method](opts.question, backend, config, tokenizer, id=question_id(opts.question),
                                           observer=view)
    finally:
        await _close(backend)
    console.print(Panel(result.trajectory[-3000:], title="trajectory (end)" if len(result.trajectory) > 3000
                        else "trajectory", border_style="dim"))
    console.print(summary_table(result))
    if opts.out:
        Path(opts.out).parent.mkdir(parents=True, exist_ok=True)
        with open(opts.out, "a", encoding="utf-8") as f:
            append_result(f, result)
        console.print(f"result appended to {opts.out}")
    return 0


async def _many(opts: RunOptions, method: str, config, backend, tokenizer) -> int:
    from sprint.inference.batch import load_items, run_batch

    items = load_items(opts.input, opts.question_field, opts.id_field)
    adapt = question_adapter(opts.model)
    if adapt is not None:
        for item in items:
            item.question = adapt(item.question)
    solve_fn = METHODS[method]

    async def one(item):
        return await solve_fn(item.question, backend, config, tokenizer, id=item.id)

    try:
        summary = await run_batch(items, one, opts.out, concurrency=opts.concurrency, progress=opts.progress)
    finally:
        await _close(backend)
    print(f"{summary.done} solved, {summary.skipped} already in {summary.out_path}, {len(summary.failed)} failed "
          f"({summary.wall_clock_s:.1f} s)")
    for qid, err in summary.failed[:10]:
        print(f"  failed: {qid}: {err}", file=sys.stderr)
    return 1 if summary.failed else 0
