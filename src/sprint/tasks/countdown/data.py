"""The Countdown data set: problems for every split, SPRINT and sequential training records, the tokenizer, and stats.

`build_countdown_data(config, out_dir)` writes, reproducibly from the config's seed (same config, same bytes):

    train.jsonl, val.jsonl, test.jsonl        problems: id, question, numbers, target, solution (a known one)
    sprint_train.jsonl, sequential_train.jsonl   training records (curation's record shape), same problems, same ids;
                                               after each SPRINT record, its executor records (one per prompt, id
                                               "<id>#exec-i.j", see `sprint.curate.records`)
    sprint_val.jsonl, sequential_val.jsonl       the same for the validation problems
    tokenizer/                                 the Countdown tokenizer (Hugging Face format)
    stats.json                                 counts, drops by reason, token statistics, the SPRINT / sequential
                                               ratio, and the search-alone baseline on the test problems

A problem is dropped from the records (both formats, so the two models see the same problems) when the search finds
no solution within its branch budget, when curation's filters reject the packing, or when any of its records is longer
than the context. Test problems get no records: they are for evaluation only.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Sequence

from sprint.tasks.countdown.problems import (DEFAULT_DIFFICULTY, Problem, check_difficulty, check_train_target_max,
                                             generate, render_question)
from sprint.tasks.countdown.search import DEFAULT_CHECK, DEFAULT_ORDER, SOLUTION_PREFIX
from sprint.tasks.countdown.traces import (ProblemTraces, TraceConfig, build_records, build_traces,
                                          check_executor_pick)

#: Budgets (sequential tokens) at which the search-alone baseline is reported, besides the data's own means.
BASELINE_BUDGETS = (128, 256, 384, 512, 768, 1024, 1536, 2048)


@dataclass
class CountdownDataConfig:
    """What `sprint countdown data` builds. Sizes are numbers of generated problems per split."""

    seed: int = 0
    train: int = 60000
    val: int = 1000
    test: int = 1000
    difficulty: str = DEFAULT_DIFFICULTY
    #: Training and validation targets go up to this (100: the task's range; see `problems.split_of`).
    train_target_max: int = 100
    trace: TraceConfig = field(default_factory=TraceConfig)

    def __post_init__(self):
        check_difficulty(self.difficulty)
        check_train_target_max(self.train_target_max)
        for name in ("train", "val", "test"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, d: dict, where: str = "config") -> "CountdownDataConfig":
        if not isinstance(d, dict):
            raise ValueError(f"{where}: expected a mapping, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
        d = dict(d)
        trace = d.pop("trace", None) or {}
        tknown = {f.name for f in fields(TraceConfig)}
        tunknown = sorted(set(trace) - tknown)
        if tunknown:
            raise ValueError(f"{where}: unknown key(s) in trace: {tunknown}; known: {sorted(tknown)}")
        return cls(**d, trace=TraceConfig(**trace))

    def to_dict(self) -> dict:
        return asdict(self)


def load_data_config(path: str | Path, overrides: Iterable[str] = ()) -> CountdownDataConfig:
    """Read a YAML (or JSON) data config and apply `key=value` overrides (dotted keys, e.g.
    `trace.executor_pick=uniform`; values read as YAML); missing keys take the defaults above."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config not found: {path}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping, got {type(data).__name__}")
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts) or len(parts) > 2 or (len(parts) == 2 and parts[0] != "trace"):
            raise ValueError(f"override {item!r}: expected KEY=VALUE or trace.KEY=VALUE")
        node = data
        if len(parts) == 2:
            node = data.setdefault("trace", None) or {}
            data["trace"] = node
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return CountdownDataConfig.from_dict(data, where=str(path) + (" with overrides" if overrides else ""))


def problem_id(split: str, seed: int, index: int) -> str:
    return f"countdown-{split}-{seed}-{index:06d}"


def problem_record(pid: str, p: Problem, question_order: str = "given") -> dict:
    return {"id": pid, "question": render_question(p, question_order), "numbers": list(p.numbers),
            "target": p.target, "solution": p.construction}


# ---------------------------------------------------------------------------------------------- statistics
def _summary(xs: Sequence[float]) -> dict:
    if not xs:
        return {"n": 0}
    s = sorted(xs)

    def q(f: float) -> float:
        return s[min(len(s) - 1, int(f * len(s)))]

    return {"n": len(s), "mean": round(statistics.fmean(s), 2), "median": q(0.5), "p90": q(0.9), "p99": q(0.99),
            "max": s[-1], "min": s[0]}


def ratio_stats(sprint_seq: Sequence[int], seq: Sequence[int]) -> dict:
    """SPRINT vs sequential sequential tokens over problems: ratio of means, mean of ratios, and both on the third
    of problems whose sequential trace is longest."""
    n = len(seq)
    if n == 0:
        return {"n": 0}
    order = sorted(range(n), key=lambda i: (seq[i], i))
    top = order[n - max(1, n // 3):]

    def both(idx):
        return {"ratio_of_means": round(sum(sprint_seq[i] for i in idx) / sum(seq[i] for i in idx), 4),
                "mean_ratio": round(statistics.fmean(sprint_seq[i] / seq[i] for i in idx), 4),
                "mean_sequential": round(statistics.fmean(seq[i] for i in idx), 2),
                "mean_sprint": round(statistics.fmean(sprint_seq[i] for i in idx), 2), "n": len(idx)}

    return {"all": both(range(n)), "longest_third": both(top)}


def format_metrics(t: ProblemTraces, counter):
    """(SPRINT trajectory, its metrics, the sequential trace's metrics) of one usable problem (`counter` is a
    `sprint.format.TokenCounter`): the trajectory as curation packs it, no render and parse round trip."""
    from sprint.curate.packing import to_trajectory
    from sprint.format import SequentialTrace, sequential_metrics, trajectory_metrics

    trajectory = to_trajectory(t.question, t.steps, t.packing, t.final_answer, openers=t.openers)
    return (trajectory, trajectory_metrics(trajectory, counter),
            sequential_metrics(SequentialTrace(t.sequential_thinking, t.final_answer), counter))


def trace_metrics(t: ProblemTraces, counter) -> dict:
    """Token metrics of both formats of one usable problem (`counter` is a `sprint.format.TokenCounter`)."""
    _, m, s = format_metrics(t, counter)
    return {"sprint_sequential": m.sequential_tokens, "sprint_total": m.total_tokens,
            "sequential": s.sequential_tokens, "stages": m.stages, "solved_at": t.search.solved_at,
            "max_branch_tokens": max(counter([b.execution for b in t.search.branches]))}


def search_costs(problems: Sequence[Problem], counter, max_value: int, order: str = DEFAULT_ORDER,
                 check: str = DEFAULT_CHECK) -> list[float]:
    """For each problem, the sequential tokens the search alone (first moves in `order`, the traces' text) needs to
    reach its answer (no branch limit): the token count of the sequential trace up to and including the answer (inf
    when none)."""
    from sprint.tasks.countdown.baseline import BaselineProblem
    from sprint.tasks.countdown.baseline import search_costs as counted

    found = counted([BaselineProblem(str(i), p) for i, p in enumerate(problems)], counter, max_branches=10**6,
                    max_value=max_value, order=order, with_answer=True, check=check)
    return [math.inf if c.tokens is None else c.tokens for c in found]


def search_baseline(costs: Sequence[float], budgets: Iterable[int] = BASELINE_BUDGETS) -> dict:
    """What the search alone solves within a budget of sequential tokens (solved within B: cost <= B)."""
    finite = [c for c in costs if c != math.inf]
    n = len(costs)
    return {"n": n, "solved_unlimited": round(len(finite) / n, 4) if n else None,
            "cost_tokens": _summary(finite),
            "solved_within": {str(b): solved_fraction(costs, b) for b in budgets}}


def solved_fraction(costs: Sequence[float], budget: float) -> float:
    return round(sum(c <= budget for c in costs) / len(costs), 4) if costs else float("nan")


# ---------------------------------------------------------------------------------------------- building
def _write_jsonl(path: Path, rows: Iterable[dict]) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    return n


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="problem", dynamic_ncols=True)


def record_lengths(records: Sequence[dict], tokenizer, counter) -> list[int]:
    """Tokens of each record as trained: the layout prefix, the completion, and the end-of-sequence token."""
    from sprint.format.layout import prompt_prefix

    texts = [prompt_prefix(r["question"], r["format"], tokenizer) + r["messages"][-1]["content"] for r in records]
    return [n + 1 for n in counter(texts)]


def loss_lengths(records: Sequence[dict], counter) -> list[int]:
    """Tokens of each record that carry loss: the assistant text from `completion_start` on, and EOS (the
    completion is tokenized on its own in training, so this count is exact for executor records too)."""
    return [n + 1 for n in counter([r["messages"][-1]["content"][r.get("completion_start", 0):] for r in records])]


def select_executor_records(exec_recs: Sequence[dict], per_stage: int | None,
                            pick: str = "solution_first") -> list[dict]:
    """At most `per_stage` executor records per stage (all when None), in the order of a hash of their id
    (deterministic, independent of the run); with `pick="solution_first"` the ones whose execution holds a
    solution come first (`TraceConfig.executor_pick`)."""
    import hashlib

    from sprint.curate.records import parse_executor_record_id

    check_executor_pick(pick)
    if per_stage is None:
        return list(exec_recs)
    solution_first = pick == "solution_first"
    solves = lambda r: SOLUTION_PREFIX in r["messages"][-1]["content"][r["completion_start"]:]
    by_stage: dict[int, list[dict]] = {}
    for rec in exec_recs:
        by_stage.setdefault(parse_executor_record_id(rec["id"])[1], []).append(rec)
    keep: set[str] = set()
    for recs in by_stage.values():
        ranked = sorted(recs, key=lambda r: (solution_first and not solves(r),
                                             hashlib.sha256(r["id"].encode()).hexdigest()))
        keep.update(r["id"] for r in ranked[:per_stage])
    return [r for r in exec_recs if r["id"] in keep]   # stage and prompt order, as written


_WORKER: dict[str, Any] = {}


def _init_worker(tokenizer_dir: str) -> None:
    from transformers import AutoTokenizer

    from sprint.tasks.countdown.tokenizer import CountdownTokenCounter

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    _WORKER.update(tokenizer=tok, counter=CountdownTokenCounter(tok))


def _problem_outputs(args) -> tuple:
    """Everything one problem contributes (run in a worker process or inline): ("drop", reason) or
    ("keep", sprint record, sequential record, executor records, lengths..., metrics)."""
    pid, p, trace_cfg, tokenizer, counter = args
    if tokenizer is None:
        tokenizer, counter = _WORKER["tokenizer"], _WORKER["counter"]
    t = build_traces(p, trace_cfg)
    if t.reason is not None:
        return ("drop", t.reason.split(":")[0])
    sprint_rec, seq_rec, *exec_recs = build_records(pid, t)
    n_sprint, n_seq, *n_execs = record_lengths([sprint_rec, seq_rec, *exec_recs], tokenizer, counter)
    if max([n_sprint, n_seq, *n_execs]) > trace_cfg.context:
        return ("drop", "too_long")
    kept = select_executor_records(exec_recs, trace_cfg.executor_views, trace_cfg.executor_pick)
    ids = {r["id"] for r in kept}
    n_kept = [n for r, n in zip(exec_recs, n_execs) if r["id"] in ids]
    return ("keep", sprint_rec, seq_rec, kept, n_sprint, n_seq, n_kept, loss_lengths(kept, counter),
            trace_metrics(t, counter))


def build_split_records(split: str, problems: Sequence[Problem], cfg: CountdownDataConfig, tokenizer, counter,
                        progress: bool = True, workers: int = 1, tokenizer_dir: str | Path | None = None,
                        ) -> tuple[list[dict], list[dict], dict]:
    """Records of one split (SPRINT with its executor records, and sequential; same problems) and its statistics.

    Streams: each problem's search is turned into records and numbers right away and then dropped, so memory holds
    only the records. With `workers` > 1 the problems are spread over that many processes (each loads the
    tokenizer from `tokenizer_dir`); results come back in problem order, so the output is the same bytes.
    """
    drops: Counter[str] = Counter()
    sprint_recs: list[dict] = []
    seq_recs: list[dict] = []
    metrics: list[dict] = []
    lengths: list[tuple[int, int]] = []
    exec_lengths: list[int] = []
    exec_loss: list[int] = []
    n_exec = 0
    pool = None
    if workers > 1:
        import multiprocessing as mp

        if tokenizer_dir is None:
            raise ValueError("workers > 1 needs tokenizer_dir (each worker loads the tokenizer from it)")
        pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(str(tokenizer_dir),))
        jobs = ((problem_id(split, cfg.seed, i), p, cfg.trace, None, None) for i, p in enumerate(problems))
        outputs = pool.imap(_problem_outputs, jobs, chunksize=64)
    else:
        outputs = (_problem_outputs((problem_id(split, cfg.seed, i), p, cfg.trace, tokenizer, counter))
                   for i, p in enumerate(problems))
    try:
        for out in _progress(outputs, len(problems), f"traces {split}", progress):
            if out[0] == "drop":
                drops[out[1]] += 1
                continue
            _, sprint_rec, seq_rec, exec_recs, n_sprint, n_seq, n_execs, n_loss, m = out
            sprint_recs += [sprint_rec, *exec_recs]
            seq_recs.append(seq_rec)
            n_exec += len(exec_recs)
            lengths.append((n_sprint, n_seq))
            exec_lengths += n_execs
            exec_loss += n_loss
            metrics.append(m)
    finally:
        if pool is not None:
            pool.terminate()
    stats = {
        "problems": len(problems), "kept": len(seq_recs), "dropped": dict(sorted(drops.items())),
        "records": {"sprint": len(seq_recs), "sprint_executor": n_exec, "sequential": len(seq_recs)},
        "record_tokens": {"sprint": _summary([a for a, _ in lengths]), "sequential": _summary([b for _, b in lengths]),
                          "sprint_executor": _summary(exec_lengths)},
        "sprint_executor_loss_tokens": _summary(exec_loss),
        "training_tokens": {"sprint": sum(a for a, _ in lengths) + sum(exec_lengths),
                            "sequential": sum(b for _, b in lengths)},
        "sequential_tokens": {"sequential": _summary([m["sequential"] for m in metrics]),
                              "sprint": _summary([m["sprint_sequential"] for m in metrics])},
        "sprint_total_tokens": _summary([m["sprint_total"] for m in metrics]),
        "max_branch_tokens": _summary([m["max_branch_tokens"] for m in metrics]),
        "ratio": ratio_stats([m["sprint_sequential"] for m in metrics], [m["sequential"] for m in metrics]),
        "solved_at_branch": {str(k): v for k, v in sorted(Counter(m["solved_at"] for m in metrics).items())},
        "stages": {str(k): v for k, v in sorted(Counter(m["stages"] for m in metrics).items())},
    }
    return sprint_recs, seq_recs, stats


def build_countdown_data(cfg: CountdownDataConfig, out_dir: str | Path, *, progress: bool = True,
                         workers: int = 1) -> dict:
    """Build the whole data set into `out_dir` (see the module docstring) and return the stats written.
    `workers` processes build the records (same output for any number)."""
    from sprint.tasks.countdown.tokenizer import CountdownTokenCounter, build_countdown_tokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Tags as single tokens for every stage and prompt number the traces can use (at least the usual 12 x 8).
    width = cfg.trace.width or cfg.trace.max_branches
    max_stage = max(12, math.ceil(cfg.trace.max_branches / width) + 1)
    tokenizer = build_countdown_tokenizer(out / "tokenizer", max_value=cfg.trace.max_value, max_stage=max_stage,
                                          max_prompt=max(8, width), context=cfg.trace.context,
                                          numbers=cfg.trace.numbers,
                                          solution_digits=cfg.trace.solution_digits)
    counter = CountdownTokenCounter(tokenizer)
    stats: dict[str, Any] = {"config": cfg.to_dict(), "tokenizer_vocab": len(tokenizer), "splits": {}}
    problems = {}
    for split in ("train", "val", "test"):
        n = getattr(cfg, split)
        problems[split] = generate(split, n, cfg.seed, cfg.trace.max_value, cfg.difficulty,
                                   cfg.train_target_max if split != "test" else 100)
        _write_jsonl(out / f"{split}.jsonl",
                     (problem_record(problem_id(split, cfg.seed, i), p, cfg.trace.question_order)
                      for i, p in enumerate(problems[split])))
    for split in ("train", "val"):
        sprint_recs, seq_recs, split_stats = build_split_records(split, problems[split], cfg, tokenizer, counter,
                                                                 progress, workers, out / "tokenizer")
        _write_jsonl(out / f"sprint_{split}.jsonl", sprint_recs)
        _write_jsonl(out / f"sequential_{split}.jsonl", seq_recs)
        stats["splits"][split] = split_stats
    costs = search_costs(problems["test"], counter, cfg.trace.max_value, cfg.trace.order, cfg.trace.check)
    base = search_baseline(costs)
    train = stats["splits"]["train"]["sequential_tokens"]
    for name in ("sequential", "sprint"):
        mean = train[name].get("mean")
        if mean is not None:
            base[f"solved_within_mean_{name}_train_tokens"] = {"budget": mean, "solved": solved_fraction(costs, mean)}
    stats["test_search_baseline"] = base
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n", encoding="utf-8")
    return stats
