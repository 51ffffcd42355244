"""Answer loss weight (`data.answer_loss_weight`, `data.answer_loss_pattern`): which tokens of a record are weighted,
and how their loss is weighted in a batch.

A small model must copy its final answer (a `\\boxed{...}` expression) from an execution far back in the sequence,
and those tokens are a percent or two of the loss tokens. Scaling their loss gives the copy more gradient without more
training tokens. The weighted characters of a completion are its last `\\boxed{...}` (braces matched) and, with
`data.answer_loss_pattern`, every match of that regular expression (its first capturing group when it has one, else
the whole match): Countdown's `Solution (\\S+)` also weights each `Solution <expr>` line's expression, which the
planner copies from its executions (`weighted_char_spans`). This module owns the pieces: those character spans and
their tokens (`weighted_token_ranges`, from the tokenizer's offsets; `sprint.train.data` stores them as the per-token
0/1 column `answer_mask`, aligned with the ids), turning that column into a per-token `loss_weights` tensor of the
batch (`AnswerWeightCollator`), and the weighted loss itself (`weighted_loss`), which `SprintSFTTrainer` calls.

The loss is sum(weight x token cross-entropy) / (number of loss tokens): the normalisation TRL and Trainer use (with
`num_items_in_batch` under gradient accumulation), so a weight of 1 gives the usual loss. With weight 1.0 nothing of
this runs: no column, TRL's own collator and loss.
"""

from __future__ import annotations

import bisect
import math
import operator
import re
from typing import Sequence

BOXED = "\\boxed{"
#: The per-token column: 1 on every token of a weighted span, else 0 (uint8, aligned with input_ids).
ANSWER_MASK = "answer_mask"
#: The columns the weights need, kept through Trainer's column pruning.
ANSWER_COLUMNS = (ANSWER_MASK,)
#: The batch key of the per-token weights (popped before the model is called).
LOSS_WEIGHTS = "loss_weights"


def check_weight(weight) -> float:
    """The weight as a float, or ValueError naming `data.answer_loss_weight`."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
        raise ValueError(f"data.answer_loss_weight: must be a positive finite number, got {weight!r}")
    return float(weight)


def check_pattern(pattern) -> re.Pattern:
    """The compiled `data.answer_loss_pattern`, or ValueError naming it: not a string, not a regular expression, or
    one that matches the empty string (it would match at every position of every completion, a sure mistake such as
    `(\\S+)?`; the empty matches it yields weight nothing)."""
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"data.answer_loss_pattern: must be a non-empty regular expression, got {pattern!r}")
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise ValueError(f"data.answer_loss_pattern: '{pattern}' is not a valid regular expression: {e}") from None
    if rx.fullmatch("") is not None:
        raise ValueError(f"data.answer_loss_pattern: '{pattern}' matches the empty string (so at every position, "
                         "where it weights nothing); make what it weights non-optional, e.g. 'Solution (\\S+)'")
    return rx


def answer_char_span(text: str) -> tuple[int, int] | None:
    """(start, end) characters of the last `\\boxed{...}` in `text`, from its backslash through its matching closing
    brace (braces nest: `\\boxed{\\frac{1}{2}}`); None without one, or when that last one is never closed."""
    from sprint.eval.grading import braced_group

    start = text.rfind(BOXED)
    if start < 0:
        return None
    group = braced_group(text, start + len(BOXED) - 1)  # the grader's brace matching: the same answer it reads
    return None if group is None else (start, group[1])


def weighted_char_spans(text: str, pattern: str | re.Pattern | None = None) -> list[tuple[int, int]]:
    """The (start, end) character spans of `text` whose tokens are weighted, sorted: the answer span
    (`answer_char_span`) and, with `pattern`, every match of it, its first capturing group when the pattern has
    groups, else the whole match. Empty spans (an empty match or group, or a group that did not take part) are left
    out: they hold no character to weight. Spans may overlap; a token in several is weighted once."""
    spans = []
    boxed = answer_char_span(text)
    if boxed is not None:
        spans.append(boxed)
    if pattern is not None:
        rx = re.compile(pattern)  # re's cache: compiled once per process, not per record
        group = 1 if rx.groups else 0
        for m in rx.finditer(text):  # finditer steps past an empty match, so it always ends
            lo, hi = m.span(group)  # (-1, -1) for a group that did not take part
            if lo < hi:
                spans.append((lo, hi))
    return sorted(spans)


_START, _END = operator.itemgetter(0), operator.itemgetter(1)


def token_range(span: tuple[int, int], offsets: Sequence[tuple[int, int]]) -> tuple[int, int] | None:
    """(first, last + 1) indices of the tokens that overlap the character span [start, end), given the (start, end)
    character offsets of the tokens (a fast tokenizer's offset mapping); a token that overlaps the span counts as
    inside (a byte-level BPE may merge the space before the backslash into its token). None when none overlaps, as
    for an empty span.

    Two binary searches (offsets grow along the text, starts and ends alike): O(log tokens) per span, so a record of
    thousands of tokens with many spans costs no pass over its tokens."""
    lo, hi = span
    if hi <= lo:
        return None
    first = bisect.bisect_right(offsets, lo, key=_END)  # the first token that ends after the span starts
    last = bisect.bisect_left(offsets, hi, lo=first, key=_START)  # the first one from there that starts at its end
    return (first, last) if first < last else None


def answer_token_span(text: str, offsets: Sequence[tuple[int, int]]) -> tuple[int, int] | None:
    """(first, last + 1) token indices of the answer span of `text` (`answer_char_span`), given the character offsets
    of its tokens (`token_range`'s overlap rule). None when `text` has no answer span."""
    span = answer_char_span(text)
    return None if span is None else token_range(span, offsets)


def weighted_token_ranges(text: str, offsets: Sequence[tuple[int, int]], pattern: str | re.Pattern | None = None
                          ) -> list[tuple[int, int]]:
    """(first, last + 1) token index ranges of every span of `weighted_char_spans(text, pattern)`, given the
    character offsets of the tokens of `text` (`token_range`'s overlap rule); spans no token overlaps are left out."""
    ranges = (token_range(span, offsets) for span in weighted_char_spans(text, pattern))
    return [r for r in ranges if r is not None]


class AnswerWeightCollator:
    """Wraps a collator that pads rows to the right (TRL's, not padding-free): adds `loss_weights`, float32 like the
    input_ids' shape, 1 on every real token, `weight` where the row's `answer_mask` is 1 (clipped to the row: a sample
    truncated to max_length keeps the prefix of its mask, as TRL keeps the prefix of its ids) and 0 on padding. Only
    labelled tokens count in the loss, so the prompt's 1s are inert."""

    def __init__(self, base, weight: float):
        self.base = base
        self.weight = check_weight(weight)

    def __call__(self, features: Sequence[dict]) -> dict:
        import torch

        if ANSWER_MASK not in features[0]:
            raise ValueError(f"data.answer_loss_weight: the batch has no {ANSWER_MASK!r} column (the dataset was not "
                             "built by sprint.train.data with the weight set, or packing removed it)")
        batch = self.base(features)
        rows, t = batch["input_ids"].shape
        if rows != len(features):
            raise ValueError("data.answer_loss_weight: the collator merged samples into one row (padding-free or "
                             "packing), which the answer weights do not support")
        weights = torch.zeros((rows, t), dtype=torch.float32)
        for b, f in enumerate(features):
            n = min(len(f["input_ids"]), t)
            mask = torch.as_tensor(f[ANSWER_MASK][:n], dtype=torch.bool)
            if len(mask) < n:  # the mask comes from the same tokens as the ids: shorter means it is not theirs
                raise ValueError(f"data.answer_loss_weight: a sample's {ANSWER_MASK!r} has {len(mask)} entries for "
                                 f"{n} tokens")
            weights[b, :n] = torch.where(mask, self.weight, 1.0)
        batch[LOSS_WEIGHTS] = weights
        return batch


def weighted_loss(per_token_loss, weights, num_items_in_batch=None, label_mask=None):
    """sum(weight x token loss) / (loss tokens). `per_token_loss` (batch, T - 1) is TRL's fused-head loss of the next
    token (-log p, 0 where the label is -100), so position t scores token t + 1 and takes that token's weight;
    `weights` (batch, T) are the collator's. The divisor is `num_items_in_batch` when given (every micro-batch of the
    step, every rank: Trainer's count), else this batch's labelled tokens (`label_mask`), as in TRL."""
    import torch

    shifted = weights[:, 1:]
    if shifted.shape != per_token_loss.shape:
        raise ValueError(f"data.answer_loss_weight: per-token losses of shape {tuple(per_token_loss.shape)} do not "
                         f"line up with the weights {tuple(weights.shape)} (pre-shifted labels, as context "
                         "parallelism passes, are not supported)")
    n = label_mask.sum() if num_items_in_batch is None else num_items_in_batch
    return (per_token_loss * shifted.to(per_token_loss.dtype)).sum() / torch.as_tensor(n).clamp(min=1)
