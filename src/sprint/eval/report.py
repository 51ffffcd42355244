"""`sprint report`: tables and figures comparing evaluation runs, like the paper's Table 2 and Figs. 4-6.

Inputs, any mix of:

* run folders written by `sprint eval` (`results.jsonl` + `settings.json`); a folder holding several sub-runs
  (one `sprint eval` call with several models) stands for all of them;
* trajectory folders (text files such as the paper's released outputs), measured through `sprint.eval.analyze`
  with a tokenizer and graded against a gold file. Their method comes from the file names
  (`planner_trajectory_*` = sprint, `base_model_trajectory_*` = sequential), or else from a label naming a method,
  or else from the text (plans present = sprint).

Outputs in the output folder: `report.md`, `report.json` and PNG figures (`figures.py` draws them).
Token counts of run folders are the backend's own (the model's tokenizer); those of trajectory folders come from
`--tokenizer`. Comparisons across methods use items matched by id.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

from sprint.eval.runner import RESULTS, SETTINGS, ResultLog, summarize

SPRINT_PREFIX = "planner_trajectory_"
SEQUENTIAL_PREFIX = "base_model_trajectory_"
METHODS = ("sprint", "sequential", "sc", "sot")
# Methods whose trajectories have SPRINT stages (stage statistics are drawn only for these).
STAGED_METHODS = ("sprint",)


@dataclass
class ItemRow:
    """One item of one series, as the report needs it."""

    id: str
    correct: bool | None
    answer: str | None
    sequential_tokens: float | None
    total_tokens: float | None
    stages: int | None = None
    prompts_per_stage: list[int] | None = None
    level: int | None = None
    wall_clock_s: float | None = None
    runtime_estimate_s: float | None = None


@dataclass
class Series:
    """One method's results on one task: a run folder or a trajectory folder."""

    label: str
    task: str
    method: str
    source: str
    kind: str                       # "run" or "trajectories"
    items: list[ItemRow]
    tokens: str                     # where the token counts come from
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        recs = [asdict(it) for it in self.items]
        s = summarize(recs)
        if any(it.correct is None for it in self.items):  # no gold: accuracy is unknown, not zero
            s.update(correct=None, accuracy=None, accuracy_ci95=None)
        staged = [it for it in self.items if it.stages is not None]
        s["mean_stages"] = _mean([it.stages for it in staged]) if staged else None
        est = [it.runtime_estimate_s for it in self.items if it.runtime_estimate_s is not None]
        s["mean_runtime_estimate_s"] = _mean(est) if est else None
        return s


def _mean(xs: Iterable[float]) -> float | None:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else None


# ---------------------------------------------------------------------------------------------- runtime estimate
def _call_seconds(call: dict) -> float | None:
    """Time to first token plus decode time of one call (None when the call has no timing)."""
    if call.get("end_s") is None or call.get("start_s") is None:
        return None
    return max(0.0, float(call["end_s"]) - float(call["start_s"]))


def runtime_estimate(calls: list[dict]) -> float | None:
    """Seconds along the critical path if every call ran as fast as it did alone: no queueing, no overhead.

    Each call costs its time to first token plus its decode time. Within a stage the planner runs once; an executor
    starts when the planner has written `dispatch_tokens` tokens (at the planner's own decode speed) and its retries
    run back to back; the stage lasts until its slowest chain ends. Other calls (forced answers, baseline calls)
    group by (role, stage); calls of one group with different prompt ids (self-consistency samples, skeleton points)
    run in parallel, and groups run one after another.
    """
    if not calls:
        return None
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for c in calls:
        if _call_seconds(c) is None:
            return None
        role = c.get("role")
        groups[("stage", c.get("stage")) if role in ("planner", "executor") else (role, c.get("stage"))].append(c)
    total = 0.0
    for key, group in groups.items():
        if key[0] == "stage":
            planners = [c for c in group if c.get("role") == "planner"]
            plan_s = sum(_call_seconds(c) for c in planners)
            # Seconds per planner token after the first (for where executors were dispatched).
            ttft = sum(c.get("ttft_s") or 0.0 for c in planners)
            toks = sum(c.get("generated_tokens") or 0 for c in planners)
            per_tok = (plan_s - ttft) / toks if toks else 0.0
            chains: dict[Any, float] = defaultdict(float)
            starts: dict[Any, float] = {}
            for c in group:
                if c.get("role") == "executor" and c.get("error") != "cancelled":
                    chains[c.get("prompt_id")] += _call_seconds(c)
                    start = ttft + (c.get("dispatch_tokens") or toks) * per_tok if planners else 0.0
                    starts[c.get("prompt_id")] = max(starts.get(c.get("prompt_id"), 0.0), start)
            total += max([plan_s] + [starts[k] + v for k, v in chains.items()])
        else:
            per_id: dict[Any, float] = defaultdict(float)
            for c in group:
                per_id[c.get("prompt_id")] += _call_seconds(c)
            total += max(per_id.values())
    return total


# ---------------------------------------------------------------------------------------------- loading
def _prompts_per_stage(trajectory: str) -> list[int]:
    from sprint.format import parse

    return [len(s.prompts) for s in parse(trajectory).stages]


def is_run_dir(path: Path) -> bool:
    return (path / RESULTS).is_file() and (path / SETTINGS).is_file()


def load_run(path: Path, label: str | None = None) -> Series:
    """A run folder written by `sprint eval`."""
    settings = json.loads((path / SETTINGS).read_text())
    method = settings.get("method") or "unknown"
    task = (settings.get("task") or {}).get("task", "unknown") if isinstance(settings.get("task"), dict) \
        else str(settings.get("task", "unknown"))
    items = []
    for rec in ResultLog(path / RESULTS).read():
        traj = rec.get("trajectory") or ""
        pps = _prompts_per_stage(traj) if method in STAGED_METHODS and traj else None
        level = (rec.get("meta") or {}).get("level")
        items.append(ItemRow(
            id=str(rec["id"]), correct=bool(rec.get("correct")), answer=rec.get("answer"),
            sequential_tokens=rec.get("sequential_tokens"), total_tokens=rec.get("total_tokens"),
            stages=len(pps) if pps is not None else rec.get("stages"), prompts_per_stage=pps,
            level=_level(level), wall_clock_s=rec.get("wall_clock_s"),
            runtime_estimate_s=runtime_estimate(rec.get("calls") or [])))
    return Series(label=label or settings.get("label") or path.name, task=task, method=method, source=str(path),
                  kind="run", items=items, tokens="backend-reported", settings=settings)


def _level(value: Any) -> int | None:
    """MATH levels are ints in MATH-500 and "Level 3" strings in the original MATH release."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    digits = "".join(ch for ch in str(value) if ch.isdigit())
    return int(digits) if digits else None


def trajectory_method(path: Path, label: str | None) -> str:
    names = [p.name for p in path.iterdir() if p.is_file()]
    if any(n.startswith(SPRINT_PREFIX) for n in names):
        return "sprint"
    if any(n.startswith(SEQUENTIAL_PREFIX) for n in names):
        return "sequential"
    if label in METHODS:
        return label
    from sprint.format import tags as T

    sample = next((p for p in sorted(path.iterdir()) if p.suffix == ".txt"), None)
    if sample is not None and T.open_tag(T.plan_name(1)) in sample.read_text(errors="replace"):
        return "sprint"
    return "sequential"


def gold_levels(path: Path, id_field: str = "unique_id") -> dict[str, int]:
    """MATH difficulty levels of the gold records, by match key (empty when the file has no `level`)."""
    from sprint.eval.analyze import match_key
    from sprint.eval.tasks import read_jsonl

    return {match_key(str(row[id_field])): level for row in read_jsonl(path)
            if id_field in row and (level := _level(row.get("level"))) is not None}


def load_trajectories(path: Path, *, counter, tokenizer_name: str, gold: Path | None, label: str | None = None,
                      id_field: str = "unique_id", progress: bool = True) -> Series:
    """A folder of trajectory text files, measured and graded through `sprint.eval.analyze`."""
    from sprint.eval.analyze import analyze, match_key

    method = trajectory_method(path, label)
    fmt = "sprint" if method in STAGED_METHODS else "sequential"
    result = analyze(path, counter, gold=gold, id_field=id_field, fmt=fmt, progress=progress)
    levels = gold_levels(gold, id_field) if gold else {}
    staged = fmt == "sprint"
    rows = [ItemRow(id=it.id, correct=it.correct, answer=it.answer, sequential_tokens=it.sequential_tokens,
                    total_tokens=it.total_tokens, stages=it.stages if staged else None,
                    prompts_per_stage=list(it.prompts_per_stage) if staged else None,
                    level=levels.get(match_key(it.id)))
            for it in result.items]
    task = gold.stem if gold else "unknown"
    return Series(label=label or path.name, task=task, method=method, source=str(path), kind="trajectories",
                  items=rows, tokens=f"tokenizer {tokenizer_name}")


def load_inputs(paths: list[str | Path], *, labels: dict[str, str] | None = None, tokenizer: str | None = None,
                gold: str | Path | None = None, id_field: str = "unique_id", progress: bool = True) -> list[Series]:
    """Series for every input path (run folders, folders of sub-runs, trajectory folders).

    `labels` maps a display name to an input path. `tokenizer` (name or local directory) and `gold` are needed
    for trajectory folders only.
    """
    labels = {str(Path(p).resolve()): name for name, p in (labels or {}).items()}
    out: list[Series] = []
    counter = None
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            raise FileNotFoundError(f"not a folder: {path}")
        label = labels.get(str(path.resolve()))
        if is_run_dir(path):
            out.append(load_run(path, label))
            continue
        subs = sorted(p for p in path.iterdir() if p.is_dir() and is_run_dir(p))
        if subs:
            out.extend(load_run(p, labels.get(str(p.resolve()))) for p in subs)
            continue
        if not any(p.suffix == ".txt" for p in path.iterdir()):
            raise ValueError(f"{path}: neither a run folder (results.jsonl + settings.json), a folder of runs, "
                             f"nor a folder of trajectory .txt files")
        if not tokenizer:
            raise ValueError(f"{path} is a trajectory folder: --tokenizer is needed to count its tokens")
        if counter is None:
            from sprint.format.metrics import load_token_counter

            counter = load_token_counter(tokenizer)
        out.append(load_trajectories(path, counter=counter, tokenizer_name=str(tokenizer),
                                     gold=Path(gold) if gold else None, label=label, id_field=id_field,
                                     progress=progress))
    names = [s.label for s in out]
    for s in out:
        if names.count(s.label) > 1:
            raise ValueError(f"two inputs are both labelled {s.label!r}; name them with --label NAME=PATH")
    return out


# ---------------------------------------------------------------------------------------------- analyses
def matched(a: Series, b: Series) -> list[tuple[ItemRow, ItemRow]]:
    """Items of `a` and `b` with the same id, in `b`'s order, where both have token counts."""
    from sprint.eval.analyze import match_key

    by_id = {match_key(it.id): it for it in a.items}
    out = []
    for it in b.items:
        other = by_id.get(match_key(it.id))
        if other is not None and it.sequential_tokens is not None and other.sequential_tokens is not None:
            out.append((other, it))
    return out


def baseline_for(series: Series, all_series: list[Series]) -> Series | None:
    """The sequential series of the same task that shares the most items with `series`."""
    cands = [s for s in all_series if s.task == series.task and s.method == "sequential" and s is not series]
    if not cands or series.method == "sequential":
        return None
    return max(cands, key=lambda s: len(matched(s, series)))


def quantile_edges(values: list[float], bins: int) -> list[float]:
    """Bin edges at quantiles of `values` (fewer bins when there are few distinct values)."""
    xs = sorted(values)
    edges = [xs[0]]
    for k in range(1, bins):
        q = xs[min(len(xs) - 1, round(k * len(xs) / bins))]
        if q > edges[-1]:
            edges.append(q)
    edges.append(xs[-1])
    if len(edges) == 2 and edges[0] == edges[1]:
        edges[1] = edges[0] + 1
    return edges


def reduction_by_baseline_length(series: Series, baseline: Series, bins: int = 4) -> list[dict[str, Any]]:
    """Sequential-token reduction of `series` against `baseline`, on matched items, binned by the baseline's length.

    Reduction in a bin = 1 - (sum of the method's sequential tokens) / (sum of the baseline's), over its items.
    """
    pairs = matched(baseline, series)
    if not pairs:
        return []
    bins = max(1, min(bins, len(pairs) // 3 or 1))
    edges = quantile_edges([b.sequential_tokens for b, _ in pairs], bins)
    out = []
    for k in range(len(edges) - 1):
        lo, hi = edges[k], edges[k + 1]
        last = k == len(edges) - 2
        sel = [(b, s) for b, s in pairs if lo <= b.sequential_tokens and (b.sequential_tokens < hi or last)]
        if not sel:
            continue
        base = sum(b.sequential_tokens for b, _ in sel)
        mine = sum(s.sequential_tokens for _, s in sel)
        out.append({"bin": k + 1, "baseline_min": lo, "baseline_max": hi, "n": len(sel),
                    "mean_baseline_tokens": base / len(sel), "mean_tokens": mine / len(sel),
                    "reduction": 1 - mine / base if base else None})
    return out


def stages_by_level(series: Series) -> list[dict[str, Any]]:
    """Per difficulty level: mean stages per problem and mean stages with more than one prompt."""
    per: dict[int, list[ItemRow]] = defaultdict(list)
    for it in series.items:
        if it.level is not None and it.prompts_per_stage is not None:
            per[it.level].append(it)
    out = []
    for level in sorted(per):
        its = per[level]
        multi = [sum(p > 1 for p in it.prompts_per_stage) for it in its]
        out.append({"level": level, "n": len(its), "mean_stages": _mean(len(it.prompts_per_stage) for it in its),
                    "mean_multi_prompt_stages": _mean(multi),
                    "share_multi_prompt_stages": (sum(multi) / sum(len(it.prompts_per_stage) for it in its)
                                                  if any(it.prompts_per_stage for it in its) else None)})
    return out


# ---------------------------------------------------------------------------------------------- writing
def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x: Any, digits: int = 0) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:,.{digits}f}"


def _acc_cell(s: dict) -> str:
    if s.get("accuracy") is None:
        return "-"
    lo, hi = s["accuracy_ci95"]
    return f"{100 * s['accuracy']:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def _summary_on(series: Series, keys: set[str]) -> dict[str, Any]:
    from sprint.eval.analyze import match_key

    sub = Series(series.label, series.task, series.method, series.source, series.kind,
                 [it for it in series.items if match_key(it.id) in keys], series.tokens)
    return sub.summary()


def build_report(series: list[Series], bins: int = 4) -> dict[str, Any]:
    """Everything the report shows, as plain data (written to report.json)."""
    from sprint.eval.analyze import match_key

    table = []
    for s in series:
        table.append({"label": s.label, "task": s.task, "method": s.method, "kind": s.kind, "source": s.source,
                      "tokens": s.tokens, **s.summary()})
    matched_rows = []
    by_task: dict[str, list[Series]] = defaultdict(list)
    for s in series:
        by_task[s.task].append(s)
    for task, group in by_task.items():
        if len(group) < 2:
            continue
        common = set.intersection(*({match_key(it.id) for it in s.items} for s in group))
        for s in group:
            matched_rows.append({"task": task, "label": s.label, "method": s.method, "n_common": len(common),
                                 **_summary_on(s, common)})
    reductions = []
    for s in series:
        base = baseline_for(s, series)
        if base is None:
            continue
        pairs = matched(base, s)
        if not pairs:
            continue
        b_sum = sum(b.sequential_tokens for b, _ in pairs)
        m_sum = sum(m.sequential_tokens for _, m in pairs)
        reductions.append({"task": s.task, "label": s.label, "baseline": base.label, "n": len(pairs),
                           "reduction": 1 - m_sum / b_sum if b_sum else None,
                           "bins": reduction_by_baseline_length(s, base, bins)})
    stages = [{"label": s.label, "task": s.task, "levels": stages_by_level(s)}
              for s in series if s.method in STAGED_METHODS and stages_by_level(s)]
    runtime = []
    for s in series:
        pairs = [(it.runtime_estimate_s, it.wall_clock_s) for it in s.items
                 if it.runtime_estimate_s is not None and it.wall_clock_s is not None]
        if pairs:
            runtime.append({"label": s.label, "task": s.task, "method": s.method, "n": len(pairs),
                            "mean_runtime_estimate_s": _mean(e for e, _ in pairs),
                            "mean_wall_clock_s": _mean(w for _, w in pairs)})
    return {"series": table, "matched": matched_rows, "reduction": reductions, "stages_by_level": stages,
            "runtime": runtime}


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    """Markdown table lines."""
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return out + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def main_table(report: dict[str, Any]) -> list[str]:
    """The Table-2-style table: accuracy, sequential and total tokens of every run."""
    return _table(["task", "run", "method", "n", "accuracy [95% CI]", "no answer", "mean seq. tokens",
                   "median seq. tokens", "mean total tokens", "mean stages", "tokens counted by"],
                  [[r["task"], r["label"], r["method"], r["n"], _acc_cell(r), r["no_answer"],
                    _num(r["mean_sequential_tokens"]), _num(r["median_sequential_tokens"]),
                    _num(r["mean_total_tokens"]), _num(r["mean_stages"], 2), r["tokens"]]
                   for r in report["series"]])


def render_markdown(report: dict[str, Any], figures: list[str]) -> str:
    lines = ["# SPRINT evaluation report", "", "## Accuracy and tokens (as in the paper's Table 2)", "",
             "Accuracy is over all items (no answer counts as wrong), with a 95% Wilson interval. Sequential tokens: "
             "tokens on the critical path with unlimited executors; total tokens: all generated tokens.", ""]
    lines += main_table(report)
    if report["matched"]:
        lines += ["", "## On the items every run of a task has", ""]
        lines += _table(["task", "run", "method", "n", "accuracy [95% CI]", "mean seq. tokens", "mean total tokens"],
                        [[r["task"], r["label"], r["method"], r["n"], _acc_cell(r), _num(r["mean_sequential_tokens"]),
                          _num(r["mean_total_tokens"])] for r in report["matched"]])
    if report["reduction"]:
        lines += ["", "## Sequential-token reduction against the sequential baseline (matched items)", "",
                  "Reduction = 1 - (method's sequential tokens) / (baseline's), summed over the items of a bin; "
                  "bins are quantiles of the baseline's length.", ""]
        rows = []
        for r in report["reduction"]:
            rows.append([r["task"], r["label"], r["baseline"], "all", r["n"], "", "", _pct(r["reduction"])])
            rows += [["", "", "", f"{_num(b['baseline_min'])}-{_num(b['baseline_max'])}", b["n"],
                      _num(b["mean_baseline_tokens"]), _num(b["mean_tokens"]), _pct(b["reduction"])]
                     for b in r["bins"]]
        lines += _table(["task", "run", "baseline", "bin (baseline seq. tokens)", "n", "baseline mean", "run mean",
                         "reduction"], rows)
    if report["stages_by_level"]:
        lines += ["", "## Stages per problem by difficulty level", ""]
        lines += _table(["run", "level", "n", "mean stages", "mean stages with >1 prompt",
                         "share of stages with >1 prompt"],
                        [[r["label"], lv["level"], lv["n"], _num(lv["mean_stages"], 2),
                          _num(lv["mean_multi_prompt_stages"], 2), _pct(lv["share_multi_prompt_stages"])]
                         for r in report["stages_by_level"] for lv in r["levels"]])
    if report["runtime"]:
        lines += ["", "## Runtime: estimate from per-call timings vs measured wall-clock", "",
                  "Estimate = time to first token + decode time of each call, along the critical path (no queueing "
                  "or orchestration overhead).", ""]
        lines += _table(["run", "method", "n", "mean estimate (s)", "mean measured wall-clock (s)"],
                        [[r["label"], r["method"], r["n"], _num(r["mean_runtime_estimate_s"], 2),
                          _num(r["mean_wall_clock_s"], 2)] for r in report["runtime"]])
    else:
        lines += ["", "No input has per-call timings, so there is no runtime figure (trajectory folders have none)."]
    if figures:
        lines += ["", "## Figures", ""] + [f"![{Path(f).stem}]({Path(f).name})" for f in figures]
    lines += ["", "## Inputs", ""] + [f"- {r['label']}: `{r['source']}` ({r['kind']})" for r in report["series"]]
    return "\n".join(lines) + "\n"


def write_report(paths: list[str | Path], out_dir: str | Path, *, labels: dict[str, str] | None = None,
                 tokenizer: str | None = None, gold: str | Path | None = None, id_field: str = "unique_id",
                 bins: int = 4, progress: bool = True) -> dict[str, Any]:
    """Load the inputs, write report.json, report.md and the figures into `out_dir`; returns the report data."""
    from sprint.eval import figures as F

    series = load_inputs(paths, labels=labels, tokenizer=tokenizer, gold=gold, id_field=id_field, progress=progress)
    report = build_report(series, bins)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    made = F.draw_all(series, report, out)
    report["figures"] = [str(p) for p in made]
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(render_markdown(report, report["figures"]))
    return report


__all__ = ["ItemRow", "Series", "build_report", "load_inputs", "reduction_by_baseline_length", "render_markdown",
           "runtime_estimate", "stages_by_level", "write_report"]
