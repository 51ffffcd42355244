"""Answer loss weight (`data.answer_loss_weight`): which tokens are a record's final answer, and how their loss is
weighted in a batch.

A small model must copy its final answer (a `\\boxed{...}` expression) from an execution far back in the sequence,
and those tokens are well under 1% of the loss tokens. Scaling their loss gives the copy more gradient without more
training tokens. This module owns the three pieces: finding the answer span of a completion (the last `\\boxed{...}`,
braces matched) and its tokens (`answer_token_span`, from the tokenizer's offsets; `sprint.train.data` stores it as
the per-record columns `answer_start`/`answer_end`), turning those columns into a per-token `loss_weights` tensor of
the batch (`AnswerWeightCollator`), and the weighted loss itself (`weighted_loss`), which `SprintSFTTrainer` calls.

The loss is sum(weight x token cross-entropy) / (number of loss tokens): the normalisation TRL and Trainer use (with
`num_items_in_batch` under gradient accumulation), so a weight of 1 gives the usual loss. With weight 1.0 nothing of
this runs: no columns, TRL's own collator and loss.
"""

from __future__ import annotations

import math
from typing import Sequence

BOXED = "\\boxed{"
#: Per-record columns: the answer's first token and one past its last, as indices into the sequence (-1: no answer).
ANSWER_COLUMNS = ("answer_start", "answer_end")
#: The batch key of the per-token weights (popped before the model is called).
LOSS_WEIGHTS = "loss_weights"


def check_weight(weight) -> float:
    """The weight as a float, or ValueError naming `data.answer_loss_weight`."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
        raise ValueError(f"data.answer_loss_weight: must be a positive finite number, got {weight!r}")
    return float(weight)


def answer_char_span(text: str) -> tuple[int, int] | None:
    """(start, end) characters of the last `\\boxed{...}` in `text`, from its backslash through its matching closing
    brace (braces nest: `\\boxed{\\frac{1}{2}}`); None without one, or when that last one is never closed."""
    from sprint.eval.grading import braced_group

    start = text.rfind(BOXED)
    if start < 0:
        return None
    group = braced_group(text, start + len(BOXED) - 1)  # the grader's brace matching: the same answer it reads
    return None if group is None else (start, group[1])


def answer_token_span(text: str, offsets: Sequence[tuple[int, int]]) -> tuple[int, int] | None:
    """(first, last + 1) token indices of the answer span of `text`, given the (start, end) character offsets of its
    tokens (a fast tokenizer's offset mapping of `text`); a token that overlaps the span counts as inside (a byte-level
    BPE may merge the space before the backslash into its token). None when `text` has no answer span."""
    span = answer_char_span(text)
    if span is None:
        return None
    lo, hi = span
    first = last = None
    # Backwards from the end, where the answer is: a few steps per record instead of one per token (offsets grow
    # along the text, so the first token that ends at or before the span's start ends the search).
    for i in range(len(offsets) - 1, -1, -1):
        s, e = offsets[i]
        if e <= lo:
            break
        if s < hi:
            first = i
            last = i if last is None else last
    return None if first is None else (first, last + 1)


class AnswerWeightCollator:
    """Wraps a collator that pads rows to the right (TRL's, not padding-free): adds `loss_weights`, float32 like the
    input_ids' shape, 1 on every real token, `weight` on the answer span (clipped to the row, so a truncated sample
    keeps what is left of it) and 0 on padding. Only labelled tokens count in the loss, so the prompt's 1s are inert."""

    def __init__(self, base, weight: float):
        self.base = base
        self.weight = check_weight(weight)

    def __call__(self, features: Sequence[dict]) -> dict:
        import torch

        missing = [c for c in ANSWER_COLUMNS if c not in features[0]]
        if missing:
            raise ValueError(f"data.answer_loss_weight: the batch has no {missing[0]!r} column (the dataset was not "
                             "built by sprint.train.data with the weight set, or packing removed it)")
        batch = self.base(features)
        rows, t = batch["input_ids"].shape
        if rows != len(features):
            raise ValueError("data.answer_loss_weight: the collator merged samples into one row (padding-free or "
                             "packing), which the answer weights do not support")
        weights = torch.zeros((rows, t), dtype=torch.float32)
        for b, f in enumerate(features):
            n = min(len(f["input_ids"]), t)
            weights[b, :n] = 1.0
            lo, hi = int(f[ANSWER_COLUMNS[0]]), min(int(f[ANSWER_COLUMNS[1]]), n)
            if 0 <= lo < hi:
                weights[b, lo:hi] = self.weight
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
