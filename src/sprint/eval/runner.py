"""`sprint eval`: run a method over a task's items, concurrently and resumably, and summarize the results.

A run folder holds:

* `settings.json`: everything needed to reproduce the run (task and item selection, model, method, the solver's
  prompts, decoding settings and limits, seeds, package versions, Python, platform, CPU/GPU names, git commit,
  command line). A resumed run must have the same settings; the environment of each resume is recorded too.
* `results.jsonl`: one record per item, appended and fsync'ed as soon as the item is graded. On restart the ids
  already there are skipped; a truncated last line (a crash mid-write) is dropped, and so are records of items whose
  solver raised, so those items run again.
* `summary.json`: n, accuracy with a 95% Wilson interval, no-answer and error counts, mean and median sequential
  tokens, total tokens and wall-clock seconds.

Several (model, method) pairs in one call share the items and decoding settings; each gets its own run folder
`OUT/<label>/`, and `OUT/summary.json` / `OUT/summary.md` put them side by side.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import hashlib
import gzip
import json
import logging
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Protocol

from sprint.eval.tasks import Task, TaskItem

log = logging.getLogger(__name__)

RESULTS = "results.jsonl"
SETTINGS = "settings.json"
SUMMARY = "summary.json"
SUMMARY_MD = "summary.md"

# Settings that may differ between a run and its resumption (they do not change what an item's result is).
# `engine` is the backend as it ran (its repr: device, mode, CUDA graphs), recorded again at each resume.
_VOLATILE = ("environment", "command", "started_at", "resumes", "concurrency", "label", "engine", "warmup")
#: Sequences one SPRINT problem may run at once, for the backend's warm-up: a planner and up to seven executors (the
#: bundled Countdown models' widest stages; a wider stage captures its graphs when it first comes).
SPRINT_SEQUENCES_PER_PROBLEM = 8


class Solver(Protocol):
    """Solves one question and returns its run record (trajectory, answer, token counts, wall-clock, calls)."""

    def __call__(self, question: str) -> Awaitable[dict[str, Any]]: ...


# ---------------------------------------------------------------------------------------------- statistics
def wilson_interval(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion k/n (95% for the default z)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _median(xs: list[float]) -> float | None:
    return float(statistics.median(xs)) if xs else None


def summarize(records: Iterable[dict], n_expected: int | None = None) -> dict[str, Any]:
    """Summary of graded records. Accuracy is over ALL records: no answer and solver errors count as wrong."""
    records = list(records)
    n = len(records)
    correct = sum(bool(r.get("correct")) for r in records)
    lo, hi = wilson_interval(correct, n)
    out: dict[str, Any] = {
        "n": n,
        "correct": correct,
        "accuracy": correct / n if n else None,
        "accuracy_ci95": [lo, hi] if n else None,
        "no_answer": sum(r.get("answer") is None for r in records),
        "errors": sum(bool(r.get("error")) for r in records),
    }
    if n_expected is not None:
        out["n_expected"] = n_expected
        out["complete"] = n == n_expected
    for key in ("sequential_tokens", "total_tokens", "wall_clock_s"):
        xs = [float(r[key]) for r in records if r.get(key) is not None]
        out[f"mean_{key}"] = _mean(xs)
        out[f"median_{key}"] = _median(xs)
    return out


# ---------------------------------------------------------------------------------------------- results file
class ResultLog:
    """`results.jsonl` of one run: read back tolerantly, appended durably (flush + fsync per record). A gzipped copy
    (`*.jsonl.gz`, as benchmark scripts pack results) reads the same way."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def read(self) -> list[dict]:
        """All complete records. A truncated LAST line is tolerated; a broken line before it is an error."""
        return self._read()[0]

    def _read(self) -> tuple[list[dict], bool]:
        """(records, clean): `clean` is False when the file ends in a cut-off line or lacks its last newline."""
        if not self.path.exists():
            return [], True
        data = self.path.read_bytes()
        lines = (gzip.decompress(data) if self.path.suffix == ".gz" else data).split(b"\n")
        out = []
        for lineno, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except json.JSONDecodeError as e:
                if lineno == len(lines):  # no newline after it: the write was cut off
                    return out, False
                raise ValueError(f"{self.path}: line {lineno} is not valid JSON ({e.msg})") from None
            if not isinstance(rec, dict) or "id" not in rec:
                raise ValueError(f"{self.path}: line {lineno} is not a result record (no 'id')")
            out.append(rec)
        # A whole last record without its newline is kept, but the file must be rewritten before appending,
        # or the next record would land on the same line.
        return out, not lines[-1].strip()

    def rewrite(self, records: list[dict]) -> None:
        """Replace the file with exactly `records` (atomically: a crash leaves the old or the new file)."""
        tmp = self.path.with_suffix(".jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for rec in records:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def append(self, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


def resume_records(log: ResultLog) -> list[dict]:
    """The records a resumed run keeps: complete, error-free, one per id (the first). Cleans the file to match,
    so that new records are appended after a whole line and no id appears twice."""
    raw, clean = log._read()
    kept: dict[str, dict] = {}
    for rec in raw:
        if not rec.get("error") and rec["id"] not in kept:
            kept[rec["id"]] = rec
    records = list(kept.values())
    if not clean or len(records) != len(raw):
        log.rewrite(records)
    return records


# ---------------------------------------------------------------------------------------------- environment
_PACKAGES = ("sprint-reasoning", "torch", "transformers", "tokenizers", "accelerate", "vllm", "sglang", "openai",
             "httpx", "math-verify", "sympy", "datasets", "numpy", "trl", "peft")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu_names() -> list[str]:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        if out.returncode == 0:
            return [line.strip() for line in out.stdout.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError):
        pass
    torch = sys.modules.get("torch")  # only ask torch when the run already imported it
    if torch is not None and torch.cuda.is_available():
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return []


def _git_commit() -> dict[str, Any] | None:
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10)
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def environment_info() -> dict[str, Any]:
    """Package versions, Python, platform, CPU and GPU names, git commit: what a reader needs to reproduce a run."""
    from importlib import metadata

    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "gpus": _gpu_names(),
        "packages": versions,
        "git": _git_commit(),
    }


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else str(o)))


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _differences(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix[:-1]} ({a!r} -> {b!r})"]


def write_settings(out_dir: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """Write settings.json, or check it against an earlier run in the same folder and record this resume."""
    path = out_dir / SETTINGS
    settings = _jsonable(settings)
    if path.exists():
        old = json.loads(path.read_text())
        fixed_old = {k: v for k, v in old.items() if k not in _VOLATILE}
        fixed_new = {k: v for k, v in settings.items() if k not in _VOLATILE}
        diffs = _differences(fixed_old, fixed_new)
        if diffs:
            raise ValueError(f"{out_dir} holds a run with other settings; use another --out or delete it. "
                             f"Differences: {'; '.join(diffs[:8])}")
        old.setdefault("resumes", []).append({"at": _now(), "command": settings.get("command"),
                                              "concurrency": settings.get("concurrency"),
                                              "environment": settings.get("environment"),
                                              **({"engine": settings["engine"]} if "engine" in settings else {})})
        settings = old
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return settings


# ---------------------------------------------------------------------------------------------- one run
@dataclass
class SubRun:
    """One (model, method) pair of an eval call, with its folder and its solver."""

    label: str
    method: str
    model: str | None
    out_dir: Path
    solve: Solver
    settings: dict[str, Any] = field(default_factory=dict)   # model/method/solver settings of this pair


def ids_digest(items: list[TaskItem]) -> str:
    """A fingerprint of the selected items (ids and questions), saved so a rerun can prove it saw the same items."""
    h = hashlib.sha256()
    for it in items:
        h.update(it.id.encode() + b"\0" + it.question.encode() + b"\0")
    return h.hexdigest()


async def _solve_one(item: TaskItem, task: Task, solve: Solver) -> dict[str, Any]:
    start = time.perf_counter()
    base = {"id": item.id, "gold": item.gold, "meta": item.meta}
    try:
        out = dict(await solve(item.question))
    except asyncio.CancelledError:
        raise
    except Exception as e:  # one failed item must not end a long run; it is recorded and retried on resume
        return {**base, "answer": None, "correct": False, "status": "error", "error": f"{type(e).__name__}: {e}",
                "wall_clock_s": time.perf_counter() - start}
    text = out.get("trajectory") or ""
    graded = await asyncio.to_thread(task.grade, text, item)
    rec = {**base, "answer": graded.answer, "correct": graded.correct, "status": graded.status}
    for key, value in out.items():
        if key not in rec and key != "id":
            rec[key] = value
    if rec.get("wall_clock_s") is None:
        rec["wall_clock_s"] = time.perf_counter() - start
    if "answer" in out and out["answer"] != graded.answer:
        rec["solver_answer"] = out["answer"]  # the solver's own extraction, kept when it differs from the grader's
    return rec


async def run_subrun(task: Task, items: list[TaskItem], run: SubRun, *, concurrency: int = 8,
                     settings: dict[str, Any] | None = None, progress: bool = True) -> dict[str, Any]:
    """Run `run.solve` over `items` into `run.out_dir`, skipping items already done; returns the summary."""
    from tqdm.auto import tqdm

    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    run.out_dir.mkdir(parents=True, exist_ok=True)
    write_settings(run.out_dir, {**(settings or {}), **run.settings, "label": run.label})
    log = ResultLog(run.out_dir / RESULTS)
    wanted = {it.id for it in items}
    done = [r for r in resume_records(log) if r["id"] in wanted]
    done_ids = {r["id"] for r in done}
    pending = [it for it in items if it.id not in done_ids]

    sem = asyncio.Semaphore(concurrency)
    correct = sum(bool(r.get("correct")) for r in done)
    bar = tqdm(total=len(items), initial=len(done), desc=run.label, unit="item", disable=not progress,
               dynamic_ncols=True, file=sys.stderr)

    async def one(item: TaskItem) -> None:
        nonlocal correct
        async with sem:
            rec = await _solve_one(item, task, run.solve)
        log.append(rec)
        done.append(rec)
        correct += bool(rec.get("correct"))
        bar.update(1)
        bar.set_postfix(acc=f"{correct / len(done):.3f}", refresh=False)

    workers = [asyncio.ensure_future(one(it)) for it in pending]
    try:
        await asyncio.gather(*workers)
    finally:
        for w in workers:
            w.cancel()
        bar.close()
    order = {it.id: k for k, it in enumerate(items)}
    done.sort(key=lambda r: order[r["id"]])
    summary = {"label": run.label, "task": task.name, "method": run.method, "model": run.model,
               **summarize(done, len(items))}
    (run.out_dir / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


# ---------------------------------------------------------------------------------------------- tables
def _fmt(x: Any, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:,.{digits}f}" if isinstance(x, float) else f"{x:,}"


def summary_table(summaries: list[dict[str, Any]]) -> str:
    """A Markdown table of run summaries, side by side."""
    head = ("| run | method | model | n | accuracy (95% CI) | no answer | errors | mean seq. tokens | "
            "median seq. tokens | mean total tokens | mean wall-clock (s) |")
    rows = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for s in summaries:
        acc = s.get("accuracy")
        ci = s.get("accuracy_ci95") or [None, None]
        acc_s = "-" if acc is None else f"{100 * acc:.1f}% [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"
        rows.append(f"| {s.get('label')} | {s.get('method')} | {s.get('model') or '-'} | {s['n']} | {acc_s} | "
                    f"{s.get('no_answer', 0)} | {s.get('errors', 0)} | {_fmt(s.get('mean_sequential_tokens'))} | "
                    f"{_fmt(s.get('median_sequential_tokens'))} | {_fmt(s.get('mean_total_tokens'))} | "
                    f"{_fmt(s.get('mean_wall_clock_s'), 2)} |")
    return "\n".join(rows) + "\n"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


def run_labels(pairs: list[tuple[str | None, str]]) -> list[str]:
    """Folder names for (model, method) pairs: "<model name>-<method>", made unique."""
    labels, seen = [], {}
    for model, method in pairs:
        name = _slug(f"{Path(model.rstrip('/')).name}-{method}" if model else method)
        seen[name] = seen.get(name, 0) + 1
        labels.append(name if seen[name] == 1 else f"{name}-{seen[name]}")
    return labels


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in sys.argv)


def side_by_side(out_dir: Path, task_name: str, summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Write OUT/summary.json and OUT/summary.md for several sub-runs; returns the combined summary."""
    combined = {"task": task_name, "runs": summaries}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SUMMARY).write_text(json.dumps(combined, indent=2) + "\n")
    (out_dir / SUMMARY_MD).write_text(summary_table(summaries))
    return combined


async def run_many(task: Task, items: list[TaskItem], runs: list[SubRun], *, out_dir: Path, concurrency: int,
                   settings: dict[str, Any], progress: bool = True) -> dict[str, Any]:
    """Run several sub-runs one after the other on the same items (one at a time, so wall-clocks are comparable)."""
    summaries = []
    for run in runs:
        summaries.append(await run_subrun(task, items, run, concurrency=concurrency, settings=settings,
                                          progress=progress))
    if len(runs) == 1 and runs[0].out_dir == out_dir:
        return summaries[0]
    return side_by_side(out_dir, task.name, summaries)


# ---------------------------------------------------------------------------------------------- sprint eval
METHODS = ("sprint", "sequential", "sc", "sot")
#: Self-consistency needs varied samples: its temperature when none is given (the baselines module's default).
SC_DEFAULT_TEMPERATURE = 0.7


@dataclass
class EvalConfig:
    """Everything `sprint eval` is asked to do. Several models/methods run side by side on the same items."""

    task: str
    out: Path
    methods: list[str]
    models: list[str | None] = field(default_factory=lambda: [None])
    base_urls: list[str] = field(default_factory=list)
    data: str | None = None            # local task file (else the task's default source)
    task_options: dict[str, Any] = field(default_factory=dict)  # task keywords, e.g. countdown's question_order
    n: int | None = None
    seed: int = 0
    concurrency: int = 8
    tokenizer: str | None = None       # tokenizer for the prompt layout of HTTP backends (default: the model)
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    overrides: dict[str, str] = field(default_factory=dict)   # "sprint.max_stages" -> "8", "baseline.samples" -> ...
    backend_options: dict[str, Any] = field(default_factory=dict)  # in-process backend keywords: exact, max_batch
    summary_json: Path | None = None
    progress: bool = True


@dataclass
class PairSpec:
    label: str
    model: str | None
    method: str
    base_urls: list[str]


def pair_specs(cfg: EvalConfig) -> list[PairSpec]:
    """(model, method, servers) per sub-run: lists of equal length pair up; a list of one is shared by all.

    Base URLs: with one model, all of them serve it (the HTTP backend spreads requests over them); with several
    models, give one URL shared by all or one per model.
    """
    for m in cfg.methods:
        if m not in METHODS:
            raise ValueError(f"--method must be one of {', '.join(METHODS)}, got {m!r}")
    models, methods = list(cfg.models) or [None], list(cfg.methods)
    n = max(len(models), len(methods))
    for name, xs in (("--model", models), ("--method", methods)):
        if len(xs) not in (1, n):
            raise ValueError(f"{name} is given {len(xs)} times; give it once or as often as the other ({n})")
    models, methods = models * (n // len(models)), methods * (n // len(methods))
    urls = list(cfg.base_urls)
    if len(set(models)) == 1 or len(urls) <= 1:
        per_pair = [urls] * n
    elif len(urls) == n:
        per_pair = [[u] for u in urls]
    else:
        raise ValueError(f"--base-url is given {len(urls)} times for {len(set(models))} models; give it once, or "
                         f"once per --model ({n})")
    labels = run_labels(list(zip(models, methods)))
    return [PairSpec(lb, mo, me, u) for lb, mo, me, u in zip(labels, models, methods, per_pair)]


def _typed(value: str, annotation: str, where: str) -> Any:
    """A command-line string as the type a config field is annotated with ("int", "float | None", "bool")."""
    v = value.strip()
    if "None" in annotation and v.lower() in ("none", "null"):
        return None
    try:
        if annotation.startswith("bool"):
            if v.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(v)
            return v.lower() in ("true", "1", "yes")
        if annotation.startswith("int"):
            return int(v)
        if annotation.startswith("float"):
            return float(v)
    except ValueError:
        raise ValueError(f"{where}: {value!r} is not a valid {annotation}") from None
    return v


def solver_configs(cfg: EvalConfig, method: str, model: str | None = None):
    """The SprintConfig and BaselineConfig of a sub-run: a bundled model's limits (its context is short), then the
    shared decoding flags, then `--set` overrides."""
    from dataclasses import fields

    from sprint.inference.baselines import BaselineConfig
    from sprint.inference.orchestrator import SprintConfig
    from sprint.models import default_settings

    bundled = default_settings(model, method)
    sp: dict[str, Any] = {"seed": cfg.seed, **(bundled if method == "sprint" else {})}
    bl: dict[str, Any] = {"seed": cfg.seed, **(bundled if method != "sprint" else {})}
    temperature = cfg.temperature
    if temperature is None and method == "sc":
        temperature = SC_DEFAULT_TEMPERATURE
    if temperature is not None:
        sp.update(planner_temperature=temperature, executor_temperature=temperature)
        bl["temperature"] = temperature
    if cfg.top_p is not None:
        sp.update(planner_top_p=cfg.top_p, executor_top_p=cfg.top_p)
        bl["top_p"] = cfg.top_p
    if cfg.max_tokens is not None:
        sp.update(max_plan_tokens=cfg.max_tokens, max_exec_tokens=cfg.max_tokens)
        bl["max_tokens"] = cfg.max_tokens
    targets = {"sprint": (SprintConfig, sp), "baseline": (BaselineConfig, bl)}
    for key, value in cfg.overrides.items():
        scope, _, name = key.partition(".")
        if scope not in targets or not name:
            raise ValueError(f"--set {key}={value}: the key must be sprint.FIELD or baseline.FIELD")
        klass, into = targets[scope]
        types = {f.name: str(f.type) for f in fields(klass)}
        if name not in types:
            raise ValueError(f"--set {key}: {klass.__name__} has no field {name!r} (fields: {', '.join(types)})")
        into[name] = _typed(value, types[name], f"--set {key}")
    return SprintConfig(**sp), BaselineConfig(**bl)


def build_solver(method: str, backend, tokenizer, sprint_cfg, baseline_cfg) -> tuple[Solver, dict[str, Any]]:
    """The solver of a method on a backend, and the settings that describe it (function, config, prompts)."""
    from sprint.format import layout
    from sprint.inference import baselines
    from sprint.inference.orchestrator import solve as solve_sprint

    functions = {"sprint": (solve_sprint, sprint_cfg), "sequential": (baselines.solve_sequential, baseline_cfg),
                 "sc": (baselines.solve_self_consistency, baseline_cfg),
                 "sot": (baselines.solve_skeleton_of_thought, baseline_cfg)}
    fn, config = functions[method]
    if method == "sot":
        prompts = {"skeleton": baselines.SOT_SKELETON, "point": baselines.SOT_POINT, "answer": baselines.SOT_ANSWER}
    else:
        prompts = {"system": layout.system_prompt("sprint" if method == "sprint" else "sequential")}

    async def solve(question: str) -> dict[str, Any]:
        result = await fn(question, backend, config, tokenizer)
        rec = result.to_dict()
        run_meta = rec.pop("meta", {}) or {}
        run_meta.pop("config", None)  # the same for every item: it is in settings.json
        rec["run_meta"] = run_meta
        rec.pop("question", None)     # the question is the task's; results keep the model's side
        return rec

    settings = {"solver": f"{fn.__module__}.{fn.__name__}", "solver_config": config.to_dict(), "prompts": prompts}
    return solve, settings


def layout_settings(tokenizer, method: str, example_question: str) -> dict[str, Any]:
    """How prompts are laid out: chat template (hashed) or plain, and the exact prompt text of the first item."""
    from sprint.format import layout

    template = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
    out: dict[str, Any] = {"chat_template_sha256": hashlib.sha256(template.encode()).hexdigest()
                           if isinstance(template, str) else None,
                           "tokenizer": getattr(tokenizer, "name_or_path", None)}
    if method != "sot":
        out["example_prompt"] = layout.generation_start(
            layout.prompt_prefix(example_question, "sprint" if method == "sprint" else "sequential", tokenizer))
    return out


def default_backend(model: str | None, base_urls: list[str], tokenizer: str | None, **options):
    """The backend for a model: OpenAI-compatible servers when base URLs are given, else in-process (with `options`,
    the in-process backend's keywords)."""
    from sprint.backends import load_backend

    if options and base_urls:
        raise ValueError(f"--backend-mode/--max-batch set the in-process backend; a served model (--base-url) "
                         f"takes none of them (got {sorted(options)})")
    return load_backend(model, base_urls or None, **options)


def layout_tokenizer(name: str | None, backend):
    """The tokenizer that decides the prompt layout: the backend's own, else `name` loaded with AutoTokenizer.

    A served model name that is no loadable tokenizer falls back to the plain `<Question>` layout, with a warning
    (settings.json records which layout was used).
    """
    tok = getattr(backend, "tokenizer", None)
    if tok is not None or not name:
        return tok
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(name)
    except Exception as e:
        print(f"sprint eval: warning: no tokenizer for {name!r} ({type(e).__name__}); using the plain layout. Pass "
              "--tokenizer if the model was trained with a chat template.", file=sys.stderr)
        return None


async def _close(backend) -> None:
    for name in ("aclose", "close"):
        fn = getattr(backend, name, None)
        if fn is not None:
            out = fn()
            if asyncio.iscoroutine(out):
                await out
            return


async def evaluate(cfg: EvalConfig, make_backend: Callable[..., Any] = default_backend) -> dict[str, Any]:
    """Run `sprint eval`: every (model, method) pair on the same items, one after the other."""
    from sprint.eval.tasks import load_task

    if cfg.concurrency < 1:
        raise ValueError(f"--concurrency must be >= 1, got {cfg.concurrency}")
    specs = pair_specs(cfg)
    task = load_task(cfg.task, cfg.data, **cfg.task_options)
    items = task.load(cfg.n, cfg.seed)
    if not items:
        raise ValueError(f"task {cfg.task} has no items")
    common = {"task": task.settings(), "items": {"n": len(items), "n_requested": cfg.n, "seed": cfg.seed,
                                                 "ids_sha256": ids_digest(items)},
              "concurrency": cfg.concurrency, "command": command_line(), "started_at": _now(),
              "environment": environment_info()}
    single = len(specs) == 1
    summaries = []
    for spec in specs:
        sprint_cfg, baseline_cfg = solver_configs(cfg, spec.method, spec.model)
        backend = make_backend(spec.model, spec.base_urls, cfg.tokenizer, **cfg.backend_options)
        try:
            # Before any timed problem: an in-process backend on a GPU captures its CUDA graphs here, not on
            # whichever problem first needs a shape (`TransformersBackend.warmup`).
            warmup = getattr(backend, "warmup", None)
            per_problem = SPRINT_SEQUENCES_PER_PROBLEM if spec.method == "sprint" else 1
            warmed = await warmup(cfg.concurrency * per_problem) if callable(warmup) else {}
            if warmed:
                log.info("%s: warm-up %s", spec.label, warmed)
            tokenizer = layout_tokenizer(cfg.tokenizer or (spec.model if spec.base_urls else None), backend)
            solve, solver_settings = build_solver(spec.method, backend, tokenizer, sprint_cfg, baseline_cfg)
            run = SubRun(spec.label, spec.method, spec.model, cfg.out if single else cfg.out / spec.label, solve,
                         {"model": spec.model, "base_urls": spec.base_urls, "method": spec.method,
                          "backend": type(backend).__name__, "engine": repr(backend), **solver_settings,
                          # only when set: runs made before the options existed resume with the same settings
                          **({"backend_options": cfg.backend_options} if cfg.backend_options else {}),
                          "layout": layout_settings(tokenizer, spec.method, items[0].question),
                          **({"warmup": warmed} if warmed else {})})
            summaries.append(await run_subrun(task, items, run, concurrency=cfg.concurrency, settings=common,
                                              progress=cfg.progress))
        finally:
            await _close(backend)
    result = summaries[0] if single else side_by_side(cfg.out, task.name, summaries)
    if cfg.summary_json is not None:
        Path(cfg.summary_json).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.summary_json).write_text(json.dumps(result, indent=2) + "\n")
    return result


def run_eval(cfg: EvalConfig, make_backend: Callable[..., Any] = default_backend) -> dict[str, Any]:
    """Synchronous entry point of `sprint eval`."""
    return asyncio.run(evaluate(cfg, make_backend))


__all__ = ["EvalConfig", "METHODS", "ResultLog", "Solver", "SubRun", "build_solver", "command_line",
           "environment_info", "evaluate", "ids_digest", "pair_specs", "resume_records", "run_eval", "run_labels",
           "run_many", "run_subrun", "side_by_side", "solver_configs", "summarize", "summary_table",
           "wilson_interval", "write_settings"]
