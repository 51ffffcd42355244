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
sees. The dataset is handed to TRL already tokenized, with its `labels` (-100 on the prompt) and a `length` column,
built column-wise from flat arrays (`encode_columns`, `build_dataset`): no Python list per sample, so setup stays
short for hundreds of thousands of records.
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
from sprint.jsonl import iter_jsonl
from sprint.train.weights import ANSWER_MASK, weighted_token_ranges

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
    for lineno, obj in iter_jsonl(path, label=name):
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


def _token_ids(records: Sequence[TrainRecord], tokenizer, adds_bos: bool, offsets: bool = False
               ) -> tuple[list[tuple[str, str]], list[list[int]], list[list[int]], list | None]:
    """Texts, prompt ids (with BOS where due), completion ids (with EOS) of a batch of records and, when `offsets`,
    the completion tokens' character offsets (EOS excluded; a fast tokenizer's offset mapping), else None.

    One batched call per side: a fast tokenizer encodes a list on all its threads, with the same ids as tokenizing
    each text alone. Attention masks are not asked for: nothing uses them (about 10% of the call).
    """
    texts = [build_texts(rec, tokenizer) for rec in records]
    kw = dict(add_special_tokens=False, return_attention_mask=False, return_token_type_ids=False)
    p_all = tokenizer([p for p, _ in texts], **kw)["input_ids"]
    c_enc = tokenizer([c for _, c in texts], **kw, **({"return_offsets_mapping": True} if offsets else {}))
    eos = tokenizer.eos_token_id
    return (texts, [_with_bos(tokenizer, p, adds_bos) for p in p_all], [c + [eos] for c in c_enc["input_ids"]],
            c_enc["offset_mapping"] if offsets else None)


def _check_eos(tokenizer) -> None:
    if tokenizer.eos_token_id is None:
        raise ValueError("tokenizer: it has no EOS token; the model could not learn where a completion ends")


ENCODE_CHUNK = 1024  # records per batched tokenizer call (and per task of the process pool)


def encode_records(records: Sequence[TrainRecord], tokenizer, *, progress: bool = True,
                   desc: str = "tokenizing") -> list[dict]:
    """One dict per record: texts, `input_ids` (prompt + completion + EOS), `completion_mask` and token counts.

    For inspecting a few records (tests, tools); training data goes through `encode_columns`, which gives the same
    ids without Python lists per record.
    """
    from tqdm.auto import tqdm

    _check_eos(tokenizer)
    adds_bos = _adds_bos(tokenizer)
    rows = []
    with tqdm(total=len(records), desc=desc, disable=not progress, unit="rec") as bar:
        for lo in range(0, len(records), ENCODE_CHUNK):
            batch = records[lo:lo + ENCODE_CHUNK]
            texts, p_all, c_all, _ = _token_ids(batch, tokenizer, adds_bos)
            for rec, (prompt, completion), p_ids, c_ids in zip(batch, texts, p_all, c_all):
                rows.append({"id": rec.id, "format": rec.format, "role": rec.role, "prompt": prompt,
                             "completion": completion, "input_ids": p_ids + c_ids,
                             "completion_mask": [0] * len(p_ids) + [1] * len(c_ids),
                             "prompt_tokens": len(p_ids), "completion_tokens": len(c_ids)})
            bar.update(len(batch))
    return rows


@dataclass
class TokenColumns:
    """Tokenized records as flat arrays: record i's ids are `ids[offsets[i]:offsets[i + 1]]`, of which the first
    `prompt_tokens[i]` are the prompt's (no loss) and the rest the completion's, EOS included. With
    `data.answer_loss_weight` != 1, `answer_mask` (aligned with `ids`) is 1 on every token whose loss is weighted
    (record i's answer and pattern matches, `sprint.train.weights`) and 0 elsewhere; else it is None."""

    record_ids: list[str]
    roles: list[str]
    ids: "np.ndarray"  # int32, all records' tokens end to end
    labels: "np.ndarray"  # int32, `ids` with -100 on every prompt token (what TRL would build from a completion mask)
    offsets: "np.ndarray"  # int64, n + 1
    prompt_tokens: "np.ndarray"  # int64, n
    # Keyword-only, so subclasses (branches.BranchColumns) may add fields without defaults after them.
    answer_mask: "np.ndarray | None" = field(default=None, kw_only=True)  # uint8, like ids

    def __len__(self) -> int:
        return len(self.record_ids)

    @property
    def lengths(self):
        import numpy as np

        return np.diff(self.offsets)

    def select(self, keep) -> "TokenColumns":
        """The records where the boolean array `keep` is true, in order."""
        import numpy as np

        keep = np.asarray(keep, dtype=bool)
        tokens = np.repeat(keep, self.lengths)
        mask = None if self.answer_mask is None else self.answer_mask[tokens]
        return TokenColumns([r for r, k in zip(self.record_ids, keep) if k], [r for r, k in zip(self.roles, keep) if k],
                            self.ids[tokens], self.labels[tokens], _offsets(self.lengths[keep]),
                            self.prompt_tokens[keep], answer_mask=mask)

    def row(self, i: int) -> dict:
        """Record i as `encode_records` gives it, less the texts."""
        lo, hi, p = int(self.offsets[i]), int(self.offsets[i + 1]), int(self.prompt_tokens[i])
        return {"id": self.record_ids[i], "role": self.roles[i], "input_ids": self.ids[lo:hi].tolist(),
                "completion_mask": [0] * p + [1] * (hi - lo - p), "prompt_tokens": p, "completion_tokens": hi - lo - p}


def _offsets(lengths):
    import numpy as np

    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def _encode_chunk(records: Sequence[TrainRecord], tokenizer, adds_bos: bool, answer_spans: bool = False,
                  answer_pattern: str | None = None):
    """(ids, labels, prompt lengths, total lengths) of a batch of records, the first two flat int32 arrays; with
    `answer_spans`, then the answer mask as `TokenColumns` holds it (the answer and `answer_pattern`'s matches)."""
    import numpy as np

    texts, p_all, c_all, c_offsets = _token_ids(records, tokenizer, adds_bos, offsets=answer_spans)
    flat: list[int] = []
    for p, c in zip(p_all, c_all):
        flat += p
        flat += c
    ids = np.array(flat, dtype=np.int32)
    p_lens = np.array([len(p) for p in p_all], dtype=np.int64)
    lengths = p_lens + np.array([len(c) for c in c_all], dtype=np.int64)
    labels = ids.copy()
    for start, n in zip(_offsets(lengths)[:-1].tolist(), p_lens.tolist()):
        labels[start:start + n] = -100
    if not answer_spans:
        return ids, labels, p_lens, lengths
    mask = np.zeros(len(ids), dtype=np.uint8)
    # The spans are searched in the completion text only: the prompt (an executor's context included) has no loss.
    for (_, completion), offsets, start, p in zip(texts, c_offsets, _offsets(lengths)[:-1].tolist(), p_lens.tolist()):
        for lo, hi in weighted_token_ranges(completion, offsets, answer_pattern):
            mask[start + p + lo:start + p + hi] = 1  # completion token j is sequence token p + j
    return ids, labels, p_lens, lengths, mask


# (records, tokenizer, adds_bos, answer_spans, answer_pattern), inherited by forked workers instead of pickled
_POOL_JOB = None


def _pool_encode(lo: int):
    records, tokenizer, adds_bos, answer_spans, answer_pattern = _POOL_JOB
    return _encode_chunk(records[lo:lo + ENCODE_CHUNK], tokenizer, adds_bos, answer_spans, answer_pattern)


POOL_MIN_RECORDS = 20_000  # below this a pool's start-up costs more than it saves


def auto_num_proc(n_records: int, setting: int | None = None) -> int:
    """Processes that tokenize `n_records`: `setting` if given, else one per CPU this process may use (shared with the
    other ranks on this machine) when there are many records and more than 2 such CPUs, else 1.

    One process is not single-threaded: a fast tokenizer spreads each batch over all cores, but everything around it
    (building the texts, the id lists, the arrays) is Python and runs on one; a pool runs that part on every core.
    On 2 CPUs a pool of 2 was no faster than the tokenizer's threads.
    """
    if setting is not None:
        return max(1, setting)
    import os

    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    cpus //= max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))  # every rank tokenizes the data itself
    if cpus <= 2 or n_records < POOL_MIN_RECORDS:
        return 1
    return min(cpus, -(-n_records // ENCODE_CHUNK))


def encode_columns(records: Sequence[TrainRecord], tokenizer, *, num_proc: int = 1, progress: bool = True,
                   desc: str = "tokenizing", answer_spans: bool = False,
                   answer_pattern: str | None = None) -> TokenColumns:
    """Tokenize records into flat arrays (same ids as `encode_records`, in the same order), with `num_proc` forked
    processes when more than 1 (where fork exists); with `answer_spans`, mark each record's weighted tokens too, its
    answer and every match of `answer_pattern` (`sprint.train.weights.weighted_char_spans`), from the tokenizer's
    offset mapping: a fast tokenizer is required."""
    import multiprocessing as mp
    import os

    import numpy as np
    from tqdm.auto import tqdm

    global _POOL_JOB
    _check_eos(tokenizer)
    if answer_pattern is not None and not answer_spans:
        raise ValueError("data.answer_loss_pattern: needs answer_spans (data.answer_loss_weight != 1); it would mark "
                         "nothing")
    if answer_spans and not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"data.answer_loss_weight: finding the answer's tokens needs a fast tokenizer (offset "
                         f"mapping); {type(tokenizer).__name__} is not one")
    adds_bos = _adds_bos(tokenizer)
    starts = range(0, len(records), ENCODE_CHUNK)
    parts = []
    use_pool = num_proc > 1 and len(starts) > 1 and "fork" in mp.get_all_start_methods()
    with tqdm(total=len(records), desc=desc, disable=not progress, unit="rec") as bar:
        if use_pool:
            # Fork, so the workers inherit the records and the tokenizer: only the arrays travel back. Each worker
            # tokenizes on one thread (TOKENIZERS_PARALLELISM, read by the tokenizers library at every call, is
            # false in the children only): the pool already uses every core.
            _POOL_JOB = (records, tokenizer, adds_bos, answer_spans, answer_pattern)
            previous = os.environ.get("TOKENIZERS_PARALLELISM")
            os.environ["TOKENIZERS_PARALLELISM"] = "false"
            try:
                pool = mp.get_context("fork").Pool(min(num_proc, len(starts)))
            finally:
                if previous is None:
                    del os.environ["TOKENIZERS_PARALLELISM"]
                else:
                    os.environ["TOKENIZERS_PARALLELISM"] = previous
            try:
                with pool:
                    for lo, part in zip(starts, pool.imap(_pool_encode, starts)):  # imap keeps the order
                        parts.append(part)
                        bar.update(min(ENCODE_CHUNK, len(records) - lo))
            finally:
                _POOL_JOB = None
        else:
            for lo in starts:
                parts.append(_encode_chunk(records[lo:lo + ENCODE_CHUNK], tokenizer, adds_bos, answer_spans,
                                           answer_pattern))
                bar.update(min(ENCODE_CHUNK, len(records) - lo))
    dtypes = (np.int32, np.int32, np.int64, np.int64) + ((np.uint8,) if answer_spans else ())
    ids, labels, p_lens, lengths, *mask = ([np.concatenate(arrays) for arrays in zip(*parts)] if parts else
                                           [np.zeros(0, dtype=t) for t in dtypes])
    return TokenColumns(record_ids=[r.id for r in records], roles=[r.role for r in records], ids=ids, labels=labels,
                        offsets=_offsets(lengths), prompt_tokens=p_lens, answer_mask=mask[0] if mask else None)


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

    @classmethod
    def from_columns(cls, cols: "TokenColumns", max_length: int) -> "LengthStats":
        """The same statistics as `from_rows` of the same records, from their arrays."""
        import numpy as np

        if not len(cols):
            return cls(0, 0, 0.0, 0, 0, 0, 0, 0, max_length, 0)
        lengths = cols.lengths
        ordered = np.sort(lengths).tolist()
        over = [cols.record_ids[i] for i in np.flatnonzero(lengths > max_length)]
        total = int(lengths.sum())
        return cls(n=len(ordered), min=ordered[0], mean=total / len(ordered), p50=_nearest_rank(ordered, 0.5),
                   p95=_nearest_rank(ordered, 0.95), max=ordered[-1], total_tokens=total,
                   completion_tokens=total - int(cols.prompt_tokens.sum()), max_length=max_length,
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
LENGTH_COLUMN = "length"  # TrainingArguments.length_column_name's default: what length-grouped sampling reads


@dataclass
class PreparedData:
    """What the trainer consumes: tokenized train/eval datasets and what happened on the way.

    The datasets have the columns `input_ids`, `labels` (-100 on the prompt), `length` (tokens once truncated to
    max_length), `prompt_tokens`, `completion_tokens`, `id` and `role` (and the per-token `answer_mask` when
    data.answer_loss_weight != 1); no texts (`encode_records` gives them for a record) and no completion mask (the
    labels carry it).
    """

    train: object  # datasets.Dataset
    eval: object | None
    train_stats: LengthStats
    eval_stats: LengthStats | None
    dropped: list[str]  # ids dropped for exceeding max_length (data.on_overflow=drop)
    timings: dict = field(default_factory=dict)  # seconds: read_s, tokenize_s, dataset_s
    num_proc: int = 1  # processes that tokenized
    longest: int | None = None  # tokens in the longest sample left after the overflow policy (None: unknown)
    # data.answer_loss_weight != 1: the weight, the pattern and `answer_span_stats` per split
    answer_spans: dict | None = None

    def report(self) -> str:
        lines = [self.train_stats.summary("train")]
        if self.eval_stats is not None:
            lines.append(self.eval_stats.summary("eval"))
        if self.answer_spans is not None:
            a = self.answer_spans
            parts = [f"{split} {s['with_answer']}/{s['samples']} samples with weighted tokens, {s['tokens']} tokens = "
                     f"{100 * s['tokens'] / max(1, s['loss_tokens']):.2f}% of {s['loss_tokens']} loss tokens"
                     for split, s in (("train", a["train"]), ("eval", a["eval"])) if s is not None]
            pattern = f", data.answer_loss_pattern='{a['pattern']}'" if a.get("pattern") is not None else ""
            lines.append(f"answer spans (data.answer_loss_weight={a['weight']:g}{pattern}, after max_length): "
                         + "; ".join(parts))
        action = {"drop": "dropped", "truncate": "truncated", "error": "rejected"}
        if self.dropped:
            lines.append(f"{len(self.dropped)} over-long samples {action['drop']}: {', '.join(self.dropped[:10])}"
                         + (" ..." if len(self.dropped) > 10 else ""))
        return "\n".join(lines)

    def lengths(self, split: str = "train") -> list[int]:
        """Per-sample token counts as the trainer sees them (after truncation), read from the `length` column (from
        the input_ids' lengths, at Arrow speed, for a dataset built elsewhere without one)."""
        ds = self.train if split == "train" else self.eval
        if LENGTH_COLUMN in ds.column_names:
            return column_values(ds, LENGTH_COLUMN)
        import pyarrow.compute as pc

        return pc.list_value_length(ds.with_format("arrow")["input_ids"]).to_pylist()

    def fits(self, max_length: int) -> bool:
        """True when no sample left in either split is longer than `max_length`: truncating would change nothing."""
        return self.longest is not None and self.longest <= max_length


def column_values(ds, name: str) -> list:
    """A column of a `datasets.Dataset` as a list, read as one Arrow array (`ds[name]` is a lazy Column in datasets
    4+, whose items are fetched one row at a time)."""
    return ds.with_format("arrow")[name].to_pylist()


def answer_span_stats(cols: TokenColumns, max_length: int) -> dict:
    """How many samples have weighted tokens (`with_answer`), and those tokens against the loss tokens, as training
    sees them: a truncated sample keeps only the part of its mask before max_length."""
    import numpy as np

    kept = np.minimum(cols.lengths, max_length)
    # Only the weighted tokens' positions (a few percent of the tokens): no per-token index array of the whole data.
    hot = np.flatnonzero(cols.answer_mask)
    record = np.searchsorted(cols.offsets, hot, side="right") - 1
    inside = hot - cols.offsets[record] < kept[record]
    return {"samples": len(cols), "with_answer": int(np.unique(record[inside]).size), "tokens": int(inside.sum()),
            "loss_tokens": int(np.clip(kept - cols.prompt_tokens, 0, None).sum())}


def _apply_overflow(cols: TokenColumns, max_length: int, policy: str, label: str) -> tuple[TokenColumns, list[str]]:
    import numpy as np

    over_mask = cols.lengths > max_length
    over = [cols.record_ids[i] for i in np.flatnonzero(over_mask)]
    if not over or policy == "truncate":
        return cols, []
    if policy == "error":
        raise ValueError(f"data.max_length: {len(over)} {label} samples exceed {max_length} tokens "
                         f"(ids {', '.join(over[:10])}); raise it or set data.on_overflow=drop|truncate")
    if over_mask.all():
        raise ValueError(f"data.max_length: every {label} sample exceeds {max_length} tokens; nothing left to train on")
    return cols.select(~over_mask), over


ARROW_LIST_LIMIT = 2**31 - 1  # values one Arrow list array can hold (int32 offsets)


def _list_column(values, offsets, limit: int = ARROW_LIST_LIMIT):
    """An Arrow list column (chunked so that no chunk holds more than `limit` values) from flat values + offsets."""
    import numpy as np
    import pyarrow as pa

    chunks, start, n = [], 0, len(offsets) - 1
    while start < n or not chunks:
        end = int(np.searchsorted(offsets, offsets[start] + limit, side="right")) - 1
        end = min(max(end, start + 1), n)
        local = (offsets[start:end + 1] - offsets[start]).astype(np.int32)
        chunks.append(pa.ListArray.from_arrays(pa.array(local), pa.array(values[offsets[start]:offsets[end]])))
        start = end
    return pa.chunked_array(chunks)


def build_dataset(cols: TokenColumns, max_length: int):
    """A `datasets.Dataset` built column by column from the arrays (no Python object per token).

    `Dataset.from_list` of per-record dicts took 7.5 s for 67k records (48M tokens; 6.4 s without the text
    columns), this about 1 s. A random fingerprint is given: hashing the table for one took another second, and
    nothing caches on it (the dataset lives in memory).
    """
    import uuid

    import numpy as np
    import pyarrow as pa
    from datasets import Dataset
    from datasets.table import InMemoryTable

    lengths = cols.lengths
    table = pa.table({
        "id": pa.array(cols.record_ids, type=pa.string()),
        "role": pa.array(cols.roles, type=pa.string()),
        "input_ids": _list_column(cols.ids, cols.offsets),
        "labels": _list_column(cols.labels, cols.offsets),
        LENGTH_COLUMN: pa.array(np.minimum(lengths, max_length).astype(np.int64)),
        "prompt_tokens": pa.array(cols.prompt_tokens.astype(np.int64)),
        "completion_tokens": pa.array((lengths - cols.prompt_tokens).astype(np.int64)),
    })
    from sprint.train.branches import MASK_COLUMNS

    for name in MASK_COLUMNS:  # merged executor branches only
        if hasattr(cols, name):
            table = table.append_column(name, _list_column(getattr(cols, name), cols.offsets))
    if cols.answer_mask is not None:  # data.answer_loss_weight != 1 only
        table = table.append_column(ANSWER_MASK, _list_column(cols.answer_mask, cols.offsets))
    return Dataset(InMemoryTable(table), fingerprint=uuid.uuid4().hex)


def prepare_data(cfg, tokenizer, *, progress: bool = True) -> PreparedData:
    """Read, filter, split and tokenize the records a `TrainConfig` names; apply the overflow policy."""
    import time

    d = cfg.data
    timings: dict = {}
    t0 = time.perf_counter()
    records = read_records(d.train, d.format)
    if d.eval:
        eval_records = read_records(d.eval, d.format)
    else:
        records, eval_records = split_by_question(records, d.eval_fraction, cfg.training.seed)
    if d.max_samples is not None:
        records = records[: d.max_samples]
    t1 = time.perf_counter()
    num_proc = auto_num_proc(len(records) + len(eval_records), d.num_proc)
    spans = d.answer_loss_weight != 1.0  # else no mask column at all: the run is exactly one without the option
    pattern = d.answer_loss_pattern if spans else None  # the config refuses a pattern at weight 1 anyway
    train_cols = encode_columns(records, tokenizer, num_proc=num_proc, progress=progress, desc="tokenizing train",
                                answer_spans=spans, answer_pattern=pattern)
    eval_cols = encode_columns(eval_records, tokenizer, num_proc=num_proc, progress=progress,
                               desc="tokenizing eval", answer_spans=spans,
                               answer_pattern=pattern) if eval_records else None
    del records, eval_records
    if d.executor_branches:
        from sprint.train.branches import merge_branches

        if any(c is not None and set(c.roles) - {"planner", "executor"} for c in (train_cols, eval_cols)):
            raise ValueError("data.executor_branches: records must have role planner or executor")
        train_cols = merge_branches(train_cols)
        eval_cols = merge_branches(eval_cols) if eval_cols is not None else None
    t2 = time.perf_counter()
    # Statistics describe the data before the overflow policy, so a dry run shows what max_length would cut.
    train_stats = LengthStats.from_columns(train_cols, d.max_length)
    eval_stats = LengthStats.from_columns(eval_cols, d.max_length) if eval_cols is not None else None
    train_cols, dropped = _apply_overflow(train_cols, d.max_length, d.on_overflow, "train")
    if eval_cols is not None:
        eval_cols, eval_dropped = _apply_overflow(eval_cols, d.max_length, d.on_overflow, "eval")
        dropped += eval_dropped
    train = build_dataset(train_cols, d.max_length)
    evald = build_dataset(eval_cols, d.max_length) if eval_cols is not None else None
    t3 = time.perf_counter()
    timings.update(read_s=round(t1 - t0, 2), tokenize_s=round(t2 - t1, 2), dataset_s=round(t3 - t2, 2))
    longest = max(int(c.lengths.max()) for c in (train_cols, eval_cols) if c is not None)
    answers = None
    if spans:
        answers = {"weight": d.answer_loss_weight, "pattern": pattern,
                   "train": answer_span_stats(train_cols, d.max_length),
                   "eval": answer_span_stats(eval_cols, d.max_length) if eval_cols is not None else None}
    return PreparedData(train=train, eval=evald, train_stats=train_stats, eval_stats=eval_stats, dropped=dropped,
                        timings=timings, num_proc=num_proc, longest=longest, answer_spans=answers)


def write_records(records: Iterable[dict], path: str | Path) -> Path:
    """Write records as JSONL (used by tests and data generators that build records in Python)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path
