"""Curated training records -> token sequences with loss on the completion only, plus their length statistics.

A record (one JSONL line, written by `sprint curate` or a task's data generator) is
`{"id", "format": "sprint"|"sequential", "question", "answer", "messages": [system, user, assistant]}`, optionally
with `"role": "planner"|"executor"` (default planner) and `"completion_start": n` (default 0): the character offset
in the assistant content where the loss starts. Executor records (`sprint.curate.records`) put the executor's
inference context before `completion_start`, so that context belongs to the prompt and only the execution and its
closing tag are learned.

We never let the tokenizer's chat template render the assistant turn: DeepSeek-R1-Distill's template keeps only what
follows `</think>` in assistant turns, which would erase the whole SPRINT target. Instead the prompt is the text
inference starts from, `layout.generation_start(layout.prompt_prefix(question, format, tokenizer))` (the template
applied to [system, user] with the generation prompt, or the plain `<Question>` block, then the `<think>` opener),
and the completion is the rest of the assistant content (`layout.completion_text`), then EOS. Prompt and completion are tokenized
separately and concatenated, because at inference the model receives the prompt's tokens and generates the rest
token by token: a joint tokenization could merge tokens across the boundary and train on a split the model never
sees. The dataset is handed to TRL already tokenized, with a `completion_mask` from which TRL builds the labels
(-100 on the prompt).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from sprint.format import layout
from sprint.format import tags as T

FORMATS = ("sprint", "sequential")
ROLES = ("planner", "executor")


@dataclass
class TrainRecord:
    """One curated example: the question, its format and the assistant text the model must produce."""

    id: str
    format: str
    question: str
    completion: str  # the assistant message content (rendered SPRINT body or sequential body)
    answer: str = ""
    source: str = ""  # "file:line", for error messages
    completion_start: int = 0  # offset in `completion` where the loss starts (executor records)
    role: str = "planner"


def _record_error(where: str, msg: str) -> ValueError:
    return ValueError(f"{where}: {msg}")


def parse_record(obj: dict, where: str) -> TrainRecord:
    """Validate one JSON object as a training record; errors name `where` (file:line) and the field."""
    if not isinstance(obj, dict):
        raise _record_error(where, "a record must be a JSON object")
    rid = obj.get("id")
    where = f"{where} (id {rid!r})" if rid is not None else where
    fmt = obj.get("format")
    if fmt not in FORMATS:
        raise _record_error(where, f"field 'format' must be one of {list(FORMATS)}, got {fmt!r}")
    msgs = obj.get("messages")
    if not isinstance(msgs, list) or not all(isinstance(m, dict) for m in msgs):
        raise _record_error(where, "field 'messages' must be a list of {role, content} objects")
    roles = [m.get("role") for m in msgs]
    if roles != ["system", "user", "assistant"]:
        raise _record_error(where, f"field 'messages' must have roles [system, user, assistant], got {roles}")
    system, user, assistant = (m.get("content") for m in msgs)
    for name, content in (("system", system), ("user", user), ("assistant", assistant)):
        if not isinstance(content, str) or not content.strip():
            raise _record_error(where, f"messages: the {name} message has no text content")
    question = obj.get("question", user)
    if not isinstance(question, str) or question.strip() != user.strip():
        raise _record_error(where, "field 'question' differs from the user message")
    # The prompt is rebuilt from the question with layout's system prompt, exactly as inference builds it; a record
    # carrying another system prompt would train the model on a context it never sees at inference.
    if system != layout.system_prompt(fmt):
        raise _record_error(where, f"messages[0]: the system prompt differs from sprint.format.layout's {fmt!r} "
                                   "prompt, which inference uses; re-render the record with layout.messages()")
    role = obj.get("role", "planner")
    if role not in ROLES:
        raise _record_error(where, f"field 'role' must be one of {list(ROLES)}, got {role!r}")
    start = obj.get("completion_start", 0)
    if not isinstance(start, int) or isinstance(start, bool) or not 0 <= start < len(assistant):
        raise _record_error(where, f"field 'completion_start' must be an integer in [0, {len(assistant)}) (the "
                                   f"assistant content has {len(assistant)} characters), got {start!r}")
    if role == "executor" and (fmt != "sprint" or start == 0):
        raise _record_error(where, "an executor record must have format 'sprint' and a completion_start > 0 (its "
                                   "context is not trained on)")
    answer = obj.get("answer")
    return TrainRecord(id=str(rid if rid is not None else where), format=fmt, question=question, completion=assistant,
                       answer="" if answer is None else str(answer), source=where, completion_start=start, role=role)


def read_records(path: str | Path, fmt: str | None = None, *, source_name: str | None = None) -> list[TrainRecord]:
    """Read a JSONL file of records, keeping those of format `fmt` (all if None; then they must share one format)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training records not found: {path}")
    records: list[TrainRecord] = []
    name = source_name or str(path)
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise _record_error(f"{name}:{lineno}", f"not valid JSON ({e.msg})") from None
            records.append(parse_record(obj, f"{name}:{lineno}"))
    formats = sorted({r.format for r in records})
    if fmt is None and len(formats) > 1:
        raise ValueError(f"{name}: records mix formats {formats}; set data.format to sprint or sequential")
    if fmt is not None:
        records = [r for r in records if r.format == fmt]
    if not records:
        raise ValueError(f"{name}: no records" + (f" of format {fmt!r}" if fmt else ""))
    return records


# ---------------------------------------------------------------------------------------------- tokenizing
def prompt_token_ids(tokenizer, prompt: str) -> list[int]:
    """The prompt's token ids, as the model receives them at inference.

    Chat templates already write the BOS token into the text, so the text is tokenized without special tokens; a
    BOS is prepended only when the tokenizer adds one by default and the text does not start with it (the plain
    `<Question>` layout), which is what `tokenizer(prompt)` gives in that case.
    """
    return _with_bos(tokenizer, tokenizer(prompt, add_special_tokens=False)["input_ids"], _adds_bos(tokenizer))


def _with_bos(tokenizer, ids: list[int], adds_bos: bool) -> list[int]:
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None and (not ids or ids[0] != bos) and adds_bos:
        ids = [bos] + ids
    return ids


def _adds_bos(tokenizer) -> bool:
    probe = tokenizer("a")["input_ids"]
    return bool(probe) and probe[0] == tokenizer.bos_token_id


def build_texts(record: TrainRecord, tokenizer) -> tuple[str, str]:
    """(prompt, completion) text for a record: the text inference starts from and what the model writes after it.

    Inference starts every run from `layout.generation_start(prefix)` (the prefix plus a `<think>` opener unless the
    chat template already wrote one), so when the completion opens with `<think>` that opener belongs to the prompt:
    the token boundary is then where inference puts it.
    With `record.completion_start` > 0 the assistant content up to that offset (what is left of it after the
    `<think>` opener moved to the prompt) is appended to the prompt: for an executor record that makes the prompt
    the exact string the orchestrator sends the executor.
    """
    prefix = layout.prompt_prefix(record.question, record.format, tokenizer)
    think = T.open_tag(T.THINK)
    prompt = layout.generation_start(prefix) if record.completion.startswith(think) else prefix
    completion = layout.completion_text(prompt, record.completion)
    if record.completion_start:
        # completion_text only ever drops a leading opener, so the offset moves by what it dropped.
        cut = record.completion_start - (len(record.completion) - len(completion))
        if cut < 0:
            raise ValueError(f"{record.source}: completion_start={record.completion_start} falls inside the "
                             "<think> opener the prompt already holds")
        prompt, completion = prompt + completion[:cut], completion[cut:]
    return prompt, completion


def encode_records(records: Sequence[TrainRecord], tokenizer, *, progress: bool = True,
                   desc: str = "tokenizing") -> list[dict]:
    """Rows for `datasets.Dataset.from_list`: texts, `input_ids` (prompt + completion + EOS) and `completion_mask`."""
    from tqdm.auto import tqdm

    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer: it has no EOS token; the model could not learn where a completion ends")
    adds_bos = _adds_bos(tokenizer)
    rows = []
    # Tokenize in batches: a fast tokenizer encodes a list in parallel (hundreds of thousands of executor records
    # would take minutes one by one). The ids are the same as tokenizing each text alone.
    chunk = 1024
    with tqdm(total=len(records), desc=desc, disable=not progress, unit="rec") as bar:
        for lo in range(0, len(records), chunk):
            batch = records[lo:lo + chunk]
            texts = [build_texts(rec, tokenizer) for rec in batch]
            p_all = tokenizer([p for p, _ in texts], add_special_tokens=False)["input_ids"]
            c_all = tokenizer([c for _, c in texts], add_special_tokens=False)["input_ids"]
            for rec, (prompt, completion), p_ids, c_ids in zip(batch, texts, p_all, c_all):
                p_ids = _with_bos(tokenizer, p_ids, adds_bos)
                c_ids = c_ids + [tokenizer.eos_token_id]
                rows.append({"id": rec.id, "format": rec.format, "role": rec.role, "prompt": prompt,
                             "completion": completion, "input_ids": p_ids + c_ids,
                             "completion_mask": [0] * len(p_ids) + [1] * len(c_ids),
                             "prompt_tokens": len(p_ids), "completion_tokens": len(c_ids)})
            bar.update(len(batch))
    return rows


# ---------------------------------------------------------------------------------------------- statistics
@dataclass
class LengthStats:
    """Token lengths of a set of sequences (prompt + completion + EOS) against `max_length`."""

    n: int
    min: int
    mean: float
    p50: int
    p95: int
    max: int
    total_tokens: int
    completion_tokens: int
    max_length: int
    n_over: int  # sequences longer than max_length (would be truncated)
    over_ids: list[str] = field(default_factory=list)

    @classmethod
    def from_rows(cls, rows: Sequence[dict], max_length: int) -> "LengthStats":
        if not rows:
            return cls(0, 0, 0.0, 0, 0, 0, 0, 0, max_length, 0)
        lengths = sorted(len(r["input_ids"]) for r in rows)
        over = [r["id"] for r in rows if len(r["input_ids"]) > max_length]
        return cls(n=len(lengths), min=lengths[0], mean=sum(lengths) / len(lengths), p50=_nearest_rank(lengths, 0.5),
                   p95=_nearest_rank(lengths, 0.95), max=lengths[-1], total_tokens=sum(lengths),
                   completion_tokens=sum(r["completion_tokens"] for r in rows), max_length=max_length,
                   n_over=len(over), over_ids=over)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["over_ids"] = d["over_ids"][:20]
        return d

    def summary(self, label: str) -> str:
        return (f"{label}: {self.n} samples, tokens min {self.min} / mean {self.mean:.1f} / p50 {self.p50} / "
                f"p95 {self.p95} / max {self.max}; total {self.total_tokens} ({self.completion_tokens} with loss); "
                f"{self.n_over} longer than max_length={self.max_length}")


def _nearest_rank(sorted_values: Sequence[int], q: float) -> int:
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


# ---------------------------------------------------------------------------------------------- splits
def split_by_question(records: Sequence[TrainRecord], fraction: float, seed: int
                      ) -> tuple[list[TrainRecord], list[TrainRecord]]:
    """Hold out about `fraction` of the records for evaluation, whole questions at a time (no question in both)."""
    if fraction <= 0:
        return list(records), []
    groups: dict[str, list[TrainRecord]] = {}
    for r in records:
        groups.setdefault(r.question.strip(), []).append(r)
    keys = sorted(groups)
    if len(keys) < 2:
        raise ValueError("data.eval_fraction: needs at least two distinct questions to hold some out")
    random.Random(seed).shuffle(keys)
    target = max(1, round(fraction * len(records)))
    held: set[str] = set()
    count = 0
    for k in keys[:-1]:  # always leave at least one question for training
        if count >= target:
            break
        held.add(k)
        count += len(groups[k])
    train = [r for r in records if r.question.strip() not in held]
    return train, [r for r in records if r.question.strip() in held]


# ---------------------------------------------------------------------------------------------- assembly
@dataclass
class PreparedData:
    """What the trainer consumes: tokenized train/eval datasets and what happened on the way."""

    train: object  # datasets.Dataset
    eval: object | None
    train_stats: LengthStats
    eval_stats: LengthStats | None
    dropped: list[str]  # ids dropped for exceeding max_length (data.on_overflow=drop)

    def report(self) -> str:
        lines = [self.train_stats.summary("train")]
        if self.eval_stats is not None:
            lines.append(self.eval_stats.summary("eval"))
        action = {"drop": "dropped", "truncate": "truncated", "error": "rejected"}
        if self.dropped:
            lines.append(f"{len(self.dropped)} over-long samples {action['drop']}: {', '.join(self.dropped[:10])}"
                         + (" ..." if len(self.dropped) > 10 else ""))
        return "\n".join(lines)


def _apply_overflow(rows: list[dict], max_length: int, policy: str, label: str) -> tuple[list[dict], list[str]]:
    over = [r["id"] for r in rows if len(r["input_ids"]) > max_length]
    if not over or policy == "truncate":
        return rows, []
    if policy == "error":
        raise ValueError(f"data.max_length: {len(over)} {label} samples exceed {max_length} tokens "
                         f"(ids {', '.join(over[:10])}); raise it or set data.on_overflow=drop|truncate")
    kept = [r for r in rows if len(r["input_ids"]) <= max_length]
    if not kept:
        raise ValueError(f"data.max_length: every {label} sample exceeds {max_length} tokens; nothing left to train on")
    return kept, over


def prepare_data(cfg, tokenizer, *, progress: bool = True) -> PreparedData:
    """Read, filter, split and tokenize the records a `TrainConfig` names; apply the overflow policy."""
    from datasets import Dataset

    d = cfg.data
    records = read_records(d.train, d.format)
    if d.eval:
        eval_records = read_records(d.eval, d.format)
    else:
        records, eval_records = split_by_question(records, d.eval_fraction, cfg.training.seed)
    if d.max_samples is not None:
        records = records[: d.max_samples]
    train_rows = encode_records(records, tokenizer, progress=progress, desc="tokenizing train")
    eval_rows = encode_records(eval_records, tokenizer, progress=progress, desc="tokenizing eval") \
        if eval_records else []
    # Statistics describe the data before the overflow policy, so a dry run shows what max_length would cut.
    train_stats = LengthStats.from_rows(train_rows, d.max_length)
    eval_stats = LengthStats.from_rows(eval_rows, d.max_length) if eval_rows else None
    train_rows, dropped = _apply_overflow(train_rows, d.max_length, d.on_overflow, "train")
    if eval_rows:
        eval_rows, eval_dropped = _apply_overflow(eval_rows, d.max_length, d.on_overflow, "eval")
        dropped += eval_dropped
    return PreparedData(train=Dataset.from_list(train_rows), eval=Dataset.from_list(eval_rows) if eval_rows else None,
                        train_stats=train_stats, eval_stats=eval_stats, dropped=dropped)


def write_records(records: Iterable[dict], path: str | Path) -> Path:
    """Write records as JSONL (used by tests and data generators that build records in Python)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path
