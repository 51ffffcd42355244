"""Executor branches: one training sequence per SPRINT trajectory that holds the planner's view and every executor's.

A SPRINT problem is trained as a planner record (the whole trajectory) plus executor records (each executor's exact
inference context, then its execution). The executor records repeat their context: on the Countdown data that
repeated prompt is about 63% of their tokens, and the token budget pays for it. Here each executor record is merged
into its planner record's sequence as a *branch*: the executor's tokens after the longest prefix it shares with the
planner record are appended to that record, and a tree attention mask lets the branch see only that shared prefix and
itself, at the positions it has at inference. The planner's part stays plain causal and never sees a branch. So
every token is computed in exactly the context inference gives it (the logits match the separate records to float
rounding; tests/train/test_branches.py), and the shared context is paid for once.

Why the shared prefix is the right cut: the executor record's context is the trajectory up to its own prompt, then the
plan's close and its execution's opener (`sprint.format.incremental.executor_context`). Up to its prompt it is the
planner record's text token for token (tags are whole tokens and tokenization restarts at each), and each of those
tokens saw the same context in both, so their keys and values are the same. From the first differing token on, the
executor's tokens are its own; they form the branch.

Per token, three integer columns describe the mask: `position_ids` (the token's position at inference),
`seg_start` (where its segment starts in the sequence: 0 on the planner's part) and `ctx_end` (how much of the
sequence start it sees besides its segment: 0 on the planner's part, the shared prefix length on a branch). Token q
attends to token k iff k <= q and (k >= seg_start[q] or k < ctx_end[q]). `BranchCollator` pads them;
`tree_attention_hook` turns them into the 4D boolean mask on the model's device just before the forward pass, so the
batch keeps a 2D attention mask that the trainer counts tokens with.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Sequence

from sprint.curate.records import parse_executor_record_id
from sprint.train.data import TokenColumns

@dataclass
class BranchColumns(TokenColumns):
    """Merged sequences as flat arrays, one entry per planner record: `TokenColumns` (whose `prompt_tokens` here
    counts every token without loss: the planner's prompt and each branch's context) plus the per-token mask
    columns and the number of branches per sequence."""

    position_ids: "np.ndarray"  # int32
    seg_start: "np.ndarray"  # int32, relative to the sequence
    ctx_end: "np.ndarray"  # int32
    branches: "np.ndarray"  # int64, n: executor branches merged into each sequence

    def select(self, keep) -> "BranchColumns":
        """The sequences where the boolean array `keep` is true, in order."""
        import numpy as np

        keep = np.asarray(keep, dtype=bool)
        tokens = np.repeat(keep, self.lengths)
        base = TokenColumns.select(self, keep)
        return BranchColumns(**{f.name: getattr(base, f.name) for f in fields(TokenColumns)},
                             position_ids=self.position_ids[tokens], seg_start=self.seg_start[tokens],
                             ctx_end=self.ctx_end[tokens], branches=self.branches[keep])


def merge_branches(cols) -> BranchColumns:
    """Merge every executor record of `cols` (a `TokenColumns`) into its planner record's sequence as a branch.

    Each executor record (id `<planner id>#exec-<stage>.<index>`, `sprint.curate.records.executor_record_id`) must
    come with its planner record in the same columns; records keep the planner records'
    order, and branches their order in `cols`. With the answer weight on (`cols.answer_mask`), every token keeps its
    own record's mask entry, so the weighted loss tokens are the separate records'. Raises ValueError naming the record when an executor record has no
    planner record, or shares no token with it (no common context: not a view of that trajectory).
    """
    import numpy as np

    index = {rid: i for i, (rid, role) in enumerate(zip(cols.record_ids, cols.roles)) if role != "executor"}
    children: dict[int, list[int]] = {i: [] for i in index.values()}
    for i, (rid, role) in enumerate(zip(cols.record_ids, cols.roles)):
        if role != "executor":
            continue
        parent = parse_executor_record_id(rid)[0]
        if parent not in index:
            raise ValueError(f"data.executor_branches: executor record {rid!r} has no planner record "
                             f"{parent!r} in the same file")
        children[index[parent]].append(i)

    ids_parts, label_parts, pos_parts, seg_parts, ctx_parts, mask_parts = [], [], [], [], [], []
    amask = cols.answer_mask  # data.answer_loss_weight != 1 only: each token keeps its own record's 0/1
    lengths, no_loss, n_branches, out_ids, out_roles = [], [], [], [], []
    off = cols.offsets
    for rid, pi in index.items():
        p_lo, p_hi = int(off[pi]), int(off[pi + 1])
        trunk = cols.ids[p_lo:p_hi]
        seq_ids, seq_labels = [trunk], [cols.labels[p_lo:p_hi]]
        if amask is not None:
            mask_parts.append(amask[p_lo:p_hi])
        n = len(trunk)
        pos, seg, ctx = [np.arange(n, dtype=np.int32)], [np.zeros(n, np.int32)], [np.zeros(n, np.int32)]
        masked = int(cols.prompt_tokens[pi])
        for ei in children[pi]:
            e_lo, e_hi = int(off[ei]), int(off[ei + 1])
            e = cols.ids[e_lo:e_hi]
            m = min(len(e), len(trunk))
            differ = np.flatnonzero(e[:m] != trunk[:m])
            shared = int(differ[0]) if len(differ) else m
            if shared == 0:
                raise ValueError(f"data.executor_branches: executor record {cols.record_ids[ei]!r} shares no "
                                 f"token with its planner record {rid!r}")
            if shared == len(e):  # cannot happen for records ending in EOS; kept as a guard
                shared -= 1
            branch = e[shared:]
            k = len(branch)
            seq_ids.append(branch)
            labels = cols.labels[e_lo + shared:e_hi]
            seq_labels.append(labels)
            if amask is not None:
                mask_parts.append(amask[e_lo + shared:e_hi])
            masked += int((labels == -100).sum())
            pos.append(np.arange(shared, shared + k, dtype=np.int32))
            seg.append(np.full(k, n, np.int32))
            ctx.append(np.full(k, shared, np.int32))
            n += k
        ids_parts += seq_ids
        label_parts += seq_labels
        pos_parts += pos
        seg_parts += seg
        ctx_parts += ctx
        lengths.append(n)
        no_loss.append(masked)
        n_branches.append(len(children[pi]))
        out_ids.append(rid)
        out_roles.append("planner")
    cat = lambda parts, dtype: np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(np.asarray(lengths, dtype=np.int64), out=offsets[1:])
    return BranchColumns(record_ids=out_ids, roles=out_roles, ids=cat(ids_parts, np.int32),
                         labels=cat(label_parts, np.int32), offsets=offsets,
                         prompt_tokens=np.asarray(no_loss, dtype=np.int64), position_ids=cat(pos_parts, np.int32),
                         seg_start=cat(seg_parts, np.int32), ctx_end=cat(ctx_parts, np.int32),
                         branches=np.asarray(n_branches, dtype=np.int64),
                         answer_mask=None if amask is None else cat(mask_parts, np.uint8))


#: The per-token columns a merged dataset carries besides input_ids and labels.
MASK_COLUMNS = ("position_ids", "seg_start", "ctx_end")


def tree_mask(attention_mask, seg_start, ctx_end):
    """The 4D boolean mask (batch, 1, T, T; True = attend) of a padded batch: causal, a branch token sees its own
    segment and the first `ctx_end` tokens, no token sees padding, and every row sees itself (a padding row's output
    is never used, but a row without keys would give NaN)."""
    import torch

    t = attention_mask.shape[-1]
    ar = torch.arange(t, device=attention_mask.device)
    q, k = ar[:, None], ar[None, :]
    allowed = (k <= q) & ((k >= seg_start[:, :, None]) | (k < ctx_end[:, :, None]))
    allowed &= attention_mask.bool()[:, None, :]
    allowed |= (q == k)
    return allowed[:, None]


def tree_block_mask(attention_mask, seg_start, ctx_end):
    """`tree_mask` as a flex-attention `BlockMask` (for `attn_implementation: flex_attention`): blocks that no query
    of a block attends to are skipped, so a branch costs attention over its own context only, where the dense mask
    makes every row pay for the whole sequence."""
    from torch.nn.attention.flex_attention import create_block_mask

    real = attention_mask.bool()

    def mask_mod(b, h, q, k):
        return ((k <= q) & ((k >= seg_start[b, q]) | (k < ctx_end[b, q])) & real[b, k]) | (q == k)

    b, t = attention_mask.shape
    return create_block_mask(mask_mod, b, None, t, t, device=attention_mask.device)


def tree_attention_hook(module, args, kwargs, flex: bool = False):
    """Forward pre-hook (`register_forward_pre_hook(..., with_kwargs=True)`): replaces the batch's 2D attention mask
    with `tree_mask` (or `tree_block_mask` when `flex`, bound with functools.partial) when the batch carries the branch
    columns, and drops those columns before the model sees them."""
    if "seg_start" not in kwargs:
        return None
    seg, ctx = kwargs.pop("seg_start"), kwargs.pop("ctx_end")
    mask = kwargs.get("attention_mask")
    if mask is None:
        import torch

        mask = torch.ones_like(seg)
    kwargs["attention_mask"] = (tree_block_mask if flex else tree_mask)(mask, seg, ctx)
    return args, kwargs


class BranchCollator:
    """Pads merged sequences (right side) into a batch: input_ids, labels (-100 on padding), position_ids,
    seg_start, ctx_end and a 2D attention_mask (1 on real tokens)."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: Sequence[dict]) -> dict:
        import torch

        t = max(len(f["input_ids"]) for f in features)
        fill = {"input_ids": self.pad_token_id, "labels": -100, "position_ids": 0, "seg_start": 0, "ctx_end": 0}
        batch = {k: torch.full((len(features), t), v, dtype=torch.long) for k, v in fill.items()}
        batch["attention_mask"] = torch.zeros((len(features), t), dtype=torch.long)
        for b, f in enumerate(features):
            n = len(f["input_ids"])
            for k in fill:
                batch[k][b, :n] = torch.as_tensor(f[k], dtype=torch.long)
            batch["attention_mask"][b, :n] = 1
        return batch
