"""Analysis of saved trajectories: parse them, count their tokens, grade their answers, summarize.

Input is a folder of `.txt` trajectories or a JSONL file with one trajectory per line (field `trajectory`, `text`,
`output` or `response`, or the one given). Each item gets the format's token metrics (sequential tokens as the paper
defines them, total tokens, stages, prompts per stage; optionally sequential tokens with W executors), its extracted
answer and, with a gold file, whether it is correct.

Matching items to gold records. Every item gets a key, and so does every gold record; equal keys match:

* a `.txt` file: its name without `.txt`, minus a leading `planner_trajectory_` or `base_model_trajectory_` (the
  SPRINT release's prefixes for SPRINT and sequential outputs);
* a JSONL line: the value of its id field (`--id-field`, else `id`, else its line number);
* a gold record: the value of its id field;
* every key then has "/" replaced by "_" and a trailing ".json" dropped, so `test/algebra/1004.json` and
  `planner_trajectory_test_algebra_1004.txt` meet at `test_algebra_1004`.

Counting rules: accuracy is over all items that have a gold record; an item with no answer counts as wrong (and is
also counted as "no answer"). An item is "parsed" when the grammar holds it without any diagnostic (SPRINT format:
at least one stage and no diagnostic; sequential format: non-empty text). Token statistics are over all items: the
lenient parser keeps misplaced tags and unclosed spans inside their blocks, so their tokens count; text outside
every block (a `stray_text` diagnostic) is not counted. Mean prompts per stage pools all stages of all items.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Literal

from sprint.eval.grading import extract_answer, grade
from sprint.eval.tasks import read_jsonl, model_output
from sprint.format import parse, parse_sequential, sequential_metrics, trajectory_metrics
from sprint.format.metrics import TokenCounter, load_token_counter

Format = Literal["sprint", "sequential"]
FILE_PREFIXES = ("planner_trajectory_", "base_model_trajectory_")
TRAJECTORY_FIELDS = ("trajectory", "text", "output", "response")


def match_key(raw: str) -> str:
    """The key items and gold records are matched on (see the module docstring)."""
    key = str(raw).strip().replace("/", "_")
    return key[: -len(".json")] if key.endswith(".json") else key


def file_key(path: Path) -> str:
    """The key of a trajectory file: its stem without the release's known prefixes."""
    stem = path.stem
    for prefix in FILE_PREFIXES:
        if stem.startswith(prefix):
            return match_key(stem[len(prefix):])
    return match_key(stem)


@dataclass
class SourceItem:
    """One trajectory to analyze: its key, where it came from (file name or "FILE:line") and its text."""

    key: str
    source: str
    text: str


@dataclass
class ItemAnalysis:
    """The analysis of one trajectory (one line of `--out`)."""

    id: str
    source: str
    parsed: bool
    sequential_tokens: int
    total_tokens: int
    stages: int
    prompts_per_stage: list[int]
    answer: str | None
    correct: bool | None  # None: no gold record for this item
    status: str | None    # "correct" / "wrong" / "no_answer", or None without gold
    diagnostics: list[dict] = field(default_factory=list)  # {"code", "message", "pos"} (character position)
    sequential_tokens_with_executors: int | None = None

    @property
    def invalid_reasons(self) -> list[str]:
        return sorted({d["code"] for d in self.diagnostics})


@dataclass
class AnalyzeSummary:
    """Totals and means over the analyzed items (`--summary-json`)."""

    n: int
    parsed: int
    invalid: int
    invalid_reasons: dict[str, int]
    answered: int
    no_answer: int
    graded: int              # items with a gold record
    correct: int
    accuracy: float | None   # correct / graded; None without gold
    unmatched: int           # items without a gold record although a gold file was given
    mean_sequential_tokens: float
    median_sequential_tokens: float
    mean_total_tokens: float
    mean_stages: float
    mean_prompts_per_stage: float
    format: str
    executors: int | None = None
    mean_sequential_tokens_with_executors: float | None = None


@dataclass
class AnalyzeResult:
    items: list[ItemAnalysis]
    summary: AnalyzeSummary

    def write_items(self, path: str | Path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            for item in self.items:
                f.write(json.dumps(asdict(item), ensure_ascii=False) + "\n")

    def write_summary(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self.summary), indent=2) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------- input
def _detect_field(row: dict, where: str) -> str:
    for name in TRAJECTORY_FIELDS:
        if isinstance(row.get(name), str):
            return name
    raise ValueError(f"{where}: no trajectory field; expected one of {', '.join(TRAJECTORY_FIELDS)} "
                     f"(or pass --field), found keys {sorted(row)}")


def read_items(path: str | Path, id_field: str = "unique_id", text_field: str | None = None) -> list[SourceItem]:
    """The trajectories in a folder of `.txt` files (sorted by name) or in a JSONL file."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.txt"))
        if not files:
            raise ValueError(f"{path}: no .txt trajectory files in this folder")
        return [SourceItem(file_key(f), f.name, f.read_text(encoding="utf-8")) for f in files]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file or folder")
    rows = read_jsonl(path)
    if not rows:
        raise ValueError(f"{path}: no records")
    name = text_field or _detect_field(rows[0], f"{path}: line 1")
    items = []
    for lineno, row in enumerate(rows, start=1):
        where = f"{path.name}:{lineno}"
        text = row.get(name)
        if not isinstance(text, str):
            raise ValueError(f"{path}: record {lineno} has no text field {name!r}")
        raw_id = row.get(id_field, row.get("id", lineno))
        items.append(SourceItem(match_key(str(raw_id)), where, text))
    keys = Counter(it.key for it in items)
    dup = [k for k, c in keys.items() if c > 1]
    if dup:
        raise ValueError(f"{path}: id {dup[0]!r} appears {keys[dup[0]]} times")
    return items


def load_gold(path: str | Path, id_field: str = "unique_id", answer_field: str = "answer") -> dict[str, tuple[str, str]]:
    """Gold answers by match key: {key: (original id, answer)}."""
    out: dict[str, tuple[str, str]] = {}
    for lineno, row in enumerate(read_jsonl(Path(path)), start=1):
        for name in (id_field, answer_field):
            if row.get(name) is None:
                raise ValueError(f"{path}: record {lineno} has no field {name!r}")
        key = match_key(str(row[id_field]))
        if key in out:
            raise ValueError(f"{path}: record {lineno} repeats id {row[id_field]!r}")
        out[key] = (str(row[id_field]), str(row[answer_field]))
    return out


# ---------------------------------------------------------------------------------------------- analysis
def analyze_text(item: SourceItem, counter: TokenCounter, gold: tuple[str, str] | None, fmt: Format = "sprint",
                 executors: int | None = None) -> ItemAnalysis:
    """Parse, count and grade one trajectory."""
    if fmt == "sprint":
        traj = parse(item.text)
        metrics = trajectory_metrics(traj, counter)
        diagnostics = [asdict(d) for d in traj.diagnostics]
        parsed = traj.ok and bool(traj.stages)
        if not traj.stages:
            diagnostics.append({"code": "no_stage", "message": "no plan block", "pos": 0})
    elif fmt == "sequential":
        trace = parse_sequential(item.text)
        metrics = sequential_metrics(trace, counter)
        parsed = bool(trace.text)
        diagnostics = [] if parsed else [{"code": "empty", "message": "no text", "pos": 0}]
    else:
        raise ValueError(f"format must be 'sprint' or 'sequential', got {fmt!r}")
    # Only the model's own text is searched for the answer (a question may quote a \boxed{}).
    output = model_output(item.text)
    if gold is None:
        answer, correct, status = extract_answer(output), None, None
    else:
        g = grade(output, gold[1])
        answer, correct, status = g.answer, g.correct, g.status
    return ItemAnalysis(
        id=gold[0] if gold else item.key, source=item.source, parsed=parsed,
        sequential_tokens=metrics.sequential_tokens, total_tokens=metrics.total_tokens, stages=metrics.stages,
        prompts_per_stage=metrics.prompts_per_stage, answer=answer, correct=correct, status=status,
        diagnostics=diagnostics,
        sequential_tokens_with_executors=metrics.sequential_tokens_with(executors) if executors else None)


def _mean(xs: list[float]) -> float:
    return statistics.fmean(xs) if xs else float("nan")


def summarize(items: list[ItemAnalysis], fmt: Format, gold_given: bool, executors: int | None) -> AnalyzeSummary:
    invalid = [it for it in items if not it.parsed]
    graded = [it for it in items if it.correct is not None]
    seq = [it.sequential_tokens for it in items]
    stages = sum(it.stages for it in items)
    with_w = [it.sequential_tokens_with_executors for it in items if it.sequential_tokens_with_executors is not None]
    return AnalyzeSummary(
        n=len(items), parsed=len(items) - len(invalid), invalid=len(invalid),
        invalid_reasons=dict(Counter(r for it in invalid for r in it.invalid_reasons).most_common()),
        answered=sum(it.answer is not None for it in items), no_answer=sum(it.answer is None for it in items),
        graded=len(graded), correct=sum(bool(it.correct) for it in graded),
        accuracy=(sum(bool(it.correct) for it in graded) / len(graded)) if graded else None,
        unmatched=len(items) - len(graded) if gold_given else 0,
        mean_sequential_tokens=_mean(seq), median_sequential_tokens=statistics.median(seq) if seq else float("nan"),
        mean_total_tokens=_mean([it.total_tokens for it in items]), mean_stages=_mean([it.stages for it in items]),
        mean_prompts_per_stage=(sum(sum(it.prompts_per_stage) for it in items) / stages) if stages else 0.0,
        format=fmt, executors=executors,
        mean_sequential_tokens_with_executors=_mean(with_w) if executors else None)


def analyze(path: str | Path, tokenizer: str | TokenCounter, gold: str | Path | None = None,
            id_field: str = "unique_id", fmt: Format = "sprint", executors: int | None = None,
            text_field: str | None = None, progress: bool = True) -> AnalyzeResult:
    """Analyze every trajectory under `path` (folder of .txt or JSONL); see the module docstring for the rules.

    `tokenizer` is a Hugging Face tokenizer name or local directory, or any `TokenCounter`. `executors` adds
    sequential tokens with that many generation streams.
    """
    if executors is not None and executors < 1:
        raise ValueError(f"executors must be >= 1, got {executors}")
    counter = load_token_counter(str(tokenizer)) if isinstance(tokenizer, (str, Path)) else tokenizer
    items = read_items(path, id_field=id_field, text_field=text_field)
    golds = load_gold(gold, id_field=id_field) if gold is not None else None
    if golds is not None and not any(it.key in golds for it in items):
        raise ValueError(f"no item of {path} matches a record of {gold} (first item key {items[0].key!r}, first "
                         f"gold key {next(iter(golds), None)!r}); see `sprint analyze --help` for the matching rule")
    out = []
    for item in _progress(items, progress, f"analyzing {Path(path).name}"):
        out.append(analyze_text(item, counter, golds.get(item.key) if golds else None, fmt, executors))
    return AnalyzeResult(out, summarize(out, fmt, golds is not None, executors))


def _progress(items: list, enabled: bool, desc: str) -> Iterable:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="traj", leave=False)
