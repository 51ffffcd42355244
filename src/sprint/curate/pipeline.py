"""The curation pipeline: sequential traces in, SPRINT and sequential training records out.

Per trace: read the fields -> find the final answer and check it against the gold answer (before paying for any
LLM call) -> number the lines and extract steps (LLM) -> dependency DAG (LLM) -> fold short executions -> pack ->
filters -> render through `sprint.format` and check that the records parse back.

Resumable: every finished LLM call is on disk (`sprint.curate.cache`), so a killed run loses at most the calls in
flight, and a rerun redoes nothing that finished. Outputs (`records.jsonl`, `rejects.jsonl`, `summary.json`) are
written at the end, in input order and atomically, so an interrupted run never leaves a half-written output and a
resumed run writes exactly what an uninterrupted one would.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from sprint.curate.cache import DiskCache, atomic_write_text, text_hash
from sprint.curate.extract import Rejected, build_dag, extract_steps
from sprint.curate.lines import split_lines
from sprint.curate.llm import CachedChat, LLMCallError, LLMEndpoint, UsageLedger
from sprint.curate.packing import DEFAULT_MAX_STAGES, DEFAULT_MIN_RATIO, fold_short_executions, pack
from sprint.curate.records import RecordError, build_records, final_answer_text


@dataclass
class FieldMap:
    """Which input fields hold what. `answer` is the gold answer (a bare answer or a solution with \\boxed{});
    `solution` optionally holds the text whose boxed paragraph becomes the final answer (default: the text after
    the trace's thinking, else the trace itself). `id`: a field with a unique id (default: source and position)."""

    question: str = "problem"
    trace: str = "thought"
    answer: str | None = "solution"
    solution: str | None = None
    id: str | None = None


@dataclass
class InputItem:
    id: str
    row: dict | None
    error: str | None = None  # set when the row itself could not be read


@dataclass
class CurateConfig:
    inputs: list[str]
    out_dir: Path
    extract: LLMEndpoint
    dag: LLMEndpoint
    fields: FieldMap = field(default_factory=FieldMap)
    split: str = "train"
    subset: str | None = None
    limit: int | None = None
    cache_dir: Path | None = None
    concurrency: int = 8
    max_attempts: int = 3
    fold_threshold: int = 3
    width: int | None = None
    min_ratio: float = DEFAULT_MIN_RATIO
    max_stages: int = DEFAULT_MAX_STAGES
    check_answer: bool = True
    comments: bool = True
    executor_records: bool = True  # one record per prompt in the executor's inference context (curate.records)
    excerpt_chars: int = 600
    progress: bool = True


@dataclass
class ItemResult:
    """What became of one input: kept with its records, or rejected at `step` with `code` and `reason`."""

    id: str
    kept: bool
    records: list[dict] = field(default_factory=list)
    step: str | None = None
    code: str | None = None
    reason: str | None = None
    ratio: float | None = None
    stages: int | None = None
    steps: int | None = None

    def reject_json(self) -> dict:
        return {"id": self.id, "step": self.step, "code": self.code, "reason": self.reason, "ratio": self.ratio,
                "stages": self.stages}


# ---------------------------------------------------------------------------------------------- inputs
def _jsonl_items(path: Path) -> Iterator[InputItem]:
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            pos = f"{path.name}:{n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                yield InputItem(pos, None, f"invalid JSON at {pos} (column {e.colno}: {e.msg})")
                continue
            if not isinstance(row, dict):
                yield InputItem(pos, None, f"line {pos} is not a JSON object")
                continue
            yield InputItem(pos, row)


def _dataset_rows(spec: str, split: str, subset: str | None) -> Iterator[tuple[str, dict]]:
    import datasets  # heavy import: only for Hugging Face inputs

    p = Path(spec)
    if p.is_dir() and ((p / "dataset_info.json").exists() or (p / "dataset_dict.json").exists()
                       or (p / "state.json").exists()):
        ds = datasets.load_from_disk(str(p))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[split]
    else:
        ds = datasets.load_dataset(spec, subset, split=split)
    name = p.name if p.exists() else spec
    for k, row in enumerate(ds):
        yield f"{name}:{k}", dict(row)


def load_items(cfg: CurateConfig) -> list[InputItem]:
    """All input rows, in order: JSONL files are read line by line (bad lines become rejects naming the line);
    anything else is a Hugging Face dataset name or a local dataset directory."""
    items: list[InputItem] = []
    for spec in cfg.inputs:
        p = Path(spec)
        if p.is_file() and p.suffix in (".jsonl", ".json", ".ndjson"):
            items.extend(_jsonl_items(p))
        elif p.is_file():
            raise ValueError(f"input {spec}: expected a .jsonl file, a dataset directory or a dataset name")
        else:
            items.extend(InputItem(pos, row) for pos, row in _dataset_rows(spec, cfg.split, cfg.subset))
    if cfg.fields.id:
        for it in items:
            if it.row is not None and it.row.get(cfg.fields.id) not in (None, ""):
                it.id = str(it.row[cfg.fields.id])
    seen: Counter = Counter(it.id for it in items)
    dup = [i for i, c in seen.items() if c > 1]
    if dup:
        raise ValueError(f"--id-field {cfg.fields.id!r}: duplicate ids, for example {dup[0]!r}")
    return items[: cfg.limit] if cfg.limit is not None else items


# ---------------------------------------------------------------------------------------------- one item
def _text_field(row: dict, name: str | None, what: str, *, required: bool) -> str | None:
    if name is None:
        return None
    v = row.get(name)
    if v is None or (isinstance(v, str) and not v.strip()):
        if required:
            raise Rejected("input", "missing_field", f"the {what} field {name!r} is missing or empty")
        return None
    if not isinstance(v, str):
        v = str(v)
    return v


async def _check_answer(final_text: str, gold: str) -> None:
    from sprint.eval.grading import boxed_contents, extract_answer, is_equiv_async

    gold_answer = extract_answer(gold) if boxed_contents(gold) else gold.strip()
    pred = extract_answer(final_text)
    if pred is None:
        raise Rejected("answer", "no_final_answer", "the final answer has no \\boxed{}")
    if not await is_equiv_async(pred, gold_answer):
        raise Rejected("answer", "wrong_answer", f"{pred!r} is not equivalent to the gold answer {gold_answer!r}")


class Curator:
    """Runs the per-trace steps with shared cache, usage ledger and concurrency limit."""

    def __init__(self, cfg: CurateConfig, cache: DiskCache, ledger: UsageLedger):
        self.cfg = cfg
        self.chat = CachedChat(cache, ledger, cfg.concurrency)

    async def item(self, it: InputItem) -> ItemResult:
        result = ItemResult(id=it.id, kept=False)
        try:
            await self._run(it, result)
        except Rejected as r:
            result.kept, result.records = False, []
            result.step, result.code, result.reason = r.step, r.code, r.reason
        return result

    async def _run(self, it: InputItem, result: ItemResult) -> None:
        from sprint.format import parse_sequential, tags

        cfg, f = self.cfg, self.cfg.fields
        if it.row is None:
            raise Rejected("input", "bad_row", it.error or "unreadable row")
        question = _text_field(it.row, f.question, "question", required=True)
        raw_trace = _text_field(it.row, f.trace, "trace", required=True)
        gold = _text_field(it.row, f.answer, "answer", required=cfg.check_answer)
        solution = _text_field(it.row, f.solution, "solution", required=False)
        seq = parse_sequential(raw_trace)
        trace = seq.thinking
        if not trace.strip():
            raise Rejected("input", "empty_trace", f"the trace field {f.trace!r} has no thinking text")
        if tags.strip_format_tags(trace) != trace or tags.strip_format_tags(question) != question:
            # Such text would be read as structure when the record is parsed back.
            raise Rejected("input", "format_tags", "the question or trace contains SPRINT format tags")
        final = final_answer_text(solution, seq.answer, trace)
        if final is None:
            raise Rejected("answer", "no_final_answer", "no \\boxed{} answer in the solution or the trace")
        if cfg.check_answer:
            await _check_answer(final, gold)
        lines = split_lines(trace)
        input_hash = text_hash(question, trace)
        try:
            steps = await extract_steps(self.chat, cfg.extract, input_hash, question, trace, lines, cfg.max_attempts)
        except LLMCallError as e:
            raise Rejected("extract", "llm_error", str(e)) from None
        result.steps = len(steps)
        try:
            parents = await build_dag(self.chat, cfg.dag, input_hash, question, steps, cfg.max_attempts,
                                      cfg.excerpt_chars)
        except LLMCallError as e:
            raise Rejected("dag", "llm_error", str(e)) from None
        folded = fold_short_executions(steps, cfg.fold_threshold)
        packing = pack(folded, parents, cfg.width, min_ratio=cfg.min_ratio, max_stages=cfg.max_stages)
        result.ratio, result.stages = packing.ratio, packing.num_stages
        if not packing.kept:
            code, _, detail = (packing.reason or "dropped").partition(": ")
            raise Rejected("pack", code, detail or code)
        try:
            result.records = build_records(it.id, question, gold, trace, folded, packing, final,
                                           comments=cfg.comments, executor_records=cfg.executor_records)
        except RecordError as e:
            # Never emit a record the format module cannot read back; say so loudly, but finish the run.
            print(f"sprint curate: BUG: record {it.id} not emitted: {e}", file=sys.stderr)
            raise Rejected("render", "round_trip", str(e)) from None
        result.kept = True


# ---------------------------------------------------------------------------------------------- the run
@dataclass
class RunSummary:
    total: int
    kept: int
    dropped: dict[str, int]
    ratio_histogram: list[tuple[str, int]]
    usage: dict
    cache_hits: int
    cache_writes: int
    seconds: float
    usage_lines: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"total": self.total, "kept": self.kept, "dropped": self.dropped,
                "ratio_histogram": [{"bin": b, "count": c} for b, c in self.ratio_histogram], "usage": self.usage,
                "cache_hits": self.cache_hits, "cache_writes": self.cache_writes, "seconds": round(self.seconds, 3)}

    def text(self) -> str:
        out = [f"curated {self.total} traces: {self.kept} kept, {self.total - self.kept} dropped"]
        for reason, n in sorted(self.dropped.items(), key=lambda kv: (-kv[1], kv[0])):
            out.append(f"  dropped {n:5d}  {reason}")
        if self.ratio_histogram:
            out.append("ratio (executions / stages) of the packed traces:")
            top = max(c for _, c in self.ratio_histogram) or 1
            for b, c in self.ratio_histogram:
                out.append(f"  {b:>9} | {'#' * round(30 * c / top):<30} {c}")
        out.extend(self.usage_lines)
        out.append(f"cache: {self.cache_hits} answers reused, {self.cache_writes} new; {self.seconds:.1f} s")
        return "\n".join(out)


_BINS = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0]


def ratio_histogram(ratios: list[float]) -> list[tuple[str, int]]:
    if not ratios:
        return []
    counts = Counter()
    for r in ratios:
        k = max(i for i, lo in enumerate(_BINS) if r >= lo)
        counts[k] += 1
    labels = [f"{lo:g}-{hi:g}" for lo, hi in zip(_BINS, _BINS[1:])] + [f">={_BINS[-1]:g}"]
    return [(labels[k], counts.get(k, 0)) for k in range(len(_BINS))]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


async def run_async(cfg: CurateConfig, ledger: UsageLedger | None = None) -> RunSummary:
    start = time.monotonic()
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    cache = DiskCache(cfg.cache_dir or cfg.out_dir / "cache")
    ledger = ledger or UsageLedger()
    items = load_items(cfg)
    curator = Curator(cfg, cache, ledger)
    # Bound the traces in flight (each holds its text and LLM answers); the LLM calls have their own limit.
    gate = asyncio.Semaphore(max(1, 2 * cfg.concurrency))

    async def one(k: int, it: InputItem) -> tuple[int, ItemResult]:
        async with gate:
            return k, await curator.item(it)

    results: list[ItemResult | None] = [None] * len(items)
    bar = None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), desc="curate", unit="trace", file=sys.stderr)
    kept = 0
    for fut in asyncio.as_completed([one(k, it) for k, it in enumerate(items)]):
        k, res = await fut
        results[k] = res
        kept += res.kept
        if bar is not None:
            bar.update(1)
            bar.set_postfix(kept=kept, dropped=bar.n - kept)
    if bar is not None:
        bar.close()
    done = [r for r in results if r is not None]
    _write_jsonl(cfg.out_dir / "records.jsonl", [rec for r in done for rec in r.records])
    _write_jsonl(cfg.out_dir / "rejects.jsonl", [r.reject_json() for r in done if not r.kept])
    dropped = Counter(f"{r.step}/{r.code}" for r in done if not r.kept)
    summary = RunSummary(total=len(done), kept=sum(r.kept for r in done), dropped=dict(dropped),
                         ratio_histogram=ratio_histogram([r.ratio for r in done if r.ratio is not None]),
                         usage=ledger.to_json(), cache_hits=cache.hits, cache_writes=cache.writes,
                         seconds=time.monotonic() - start, usage_lines=ledger.lines())
    atomic_write_text(cfg.out_dir / "summary.json", json.dumps(summary.to_json(), indent=2) + "\n")
    return summary


def run(cfg: CurateConfig, ledger: UsageLedger | None = None) -> RunSummary:
    """Curate every input trace of `cfg` (see the module docstring); returns the summary it also writes."""
    return asyncio.run(run_async(cfg, ledger))


def run_openai(inputs: list[str], out_dir: str | Path, *, base_url: str | list[str], extract_model: str,
               dag_model: str, api_key_env: str = "OPENAI_API_KEY", max_tokens: int = 8000,
               temperature: float = 0.0, timeout_s: float = 600.0, prices: dict | None = None,
               cache_dir: str | Path | None = None, **options) -> RunSummary:
    """`run` with both LLM steps on an OpenAI-compatible endpoint (`options` are further `CurateConfig` fields)."""
    from sprint.backends.base import GenerationParams
    from sprint.backends.openai_http import OpenAIBackend

    concurrency = options.get("concurrency", 8)
    params = GenerationParams(max_tokens=max_tokens, temperature=temperature)

    def endpoint(model: str) -> LLMEndpoint:
        backend = OpenAIBackend(base_url, model, api_key_env=api_key_env, max_concurrency=concurrency,
                                timeout_s=timeout_s)
        return LLMEndpoint(model, backend, params)

    cfg = CurateConfig(inputs=list(inputs), out_dir=Path(out_dir), extract=endpoint(extract_model),
                       dag=endpoint(dag_model), cache_dir=Path(cache_dir) if cache_dir else None, **options)
    return run(cfg, UsageLedger(prices=dict(prices or {})))
