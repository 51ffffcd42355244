"""Rotary position embeddings computed token-major on the in-process backend's GPU fast path.

Why: transformers' attention modules rotate queries and keys as `[batch, heads, tokens, head_dim]` views of the
projections' `[batch, tokens, heads * head_dim]` output. With one token (a lone sequence decoding) that view is
contiguous; with several (a SPRINT stage's planner and executors decoding together, one row each) it is a transposed
view, and every elementwise kernel of the rotation then takes PyTorch's strided path. On an H200 the bundled
Countdown models' decode graph cost 0.13 ms more at 8 rows than at 1 with 256 keys (BENCHMARKS.md), most of it in
those kernels: a cost only SPRINT's several streams pay. Here the same arithmetic runs on the token-major views
(`[batch, tokens, heads, head_dim]`), so the products are laid out as at one row, and the results come back as the
transposed views the attention code expects.

The replacement is installed in the model's own modeling module (as kernel libraries such as Liger do), only after a
check that it returns exactly what the module's function returns on a strided multi-token input; any other call
shape (a different `unsqueeze_dim`, extra arguments) goes to the original function. Results are bit-identical: the
same operations on the same elements in the same order.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

__all__ = ["install_token_major_rope"]

_MARK = "_sprint_token_major"


def _token_major(original, rotate_half):
    def apply_rotary_pos_emb(q, k, cos, sin, *args, **kwargs):
        unsqueeze = kwargs.get("unsqueeze_dim", 1)
        if args or set(kwargs) - {"unsqueeze_dim"} or unsqueeze != 1 or q.dim() != 4 or k.dim() != 4 or (
                cos.dim() != 3):
            return original(q, k, cos, sin, *args, **kwargs)
        c, s = cos.unsqueeze(2), sin.unsqueeze(2)   # [batch, tokens, 1, head_dim]
        qt, kt = q.transpose(1, 2), k.transpose(1, 2)
        q_embed = (qt * c) + (rotate_half(qt) * s)
        k_embed = (kt * c) + (rotate_half(kt) * s)
        return q_embed.transpose(1, 2), k_embed.transpose(1, 2)

    setattr(apply_rotary_pos_emb, _MARK, True)
    apply_rotary_pos_emb.__wrapped__ = original
    return apply_rotary_pos_emb


def _same(original, candidate) -> bool:
    """Whether `candidate` returns exactly what `original` does on transposed multi-token views (float32, CPU)."""
    import torch

    g = torch.Generator().manual_seed(0)
    tokens, heads, kv_heads, dim = 3, 4, 2, 8
    q = torch.randn(1, tokens, heads * dim, generator=g).view(1, tokens, heads, dim).transpose(1, 2)
    k = torch.randn(1, tokens, kv_heads * dim, generator=g).view(1, tokens, kv_heads, dim).transpose(1, 2)
    cos, sin = torch.randn(1, tokens, dim, generator=g), torch.randn(1, tokens, dim, generator=g)
    try:
        want, got = original(q, k, cos, sin), candidate(q, k, cos, sin)
    except Exception:   # noqa: BLE001 - a function of another shape: leave the module alone
        return False
    return all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(want, got))


def install_token_major_rope(model: Any) -> bool:
    """Replace `apply_rotary_pos_emb` in `model`'s modeling module by the token-major version (module doc). Returns
    whether the module now has it (False: the module has no such function, or it computes something else)."""
    module = sys.modules.get(type(model).__module__)
    original = getattr(module, "apply_rotary_pos_emb", None)
    rotate_half = getattr(module, "rotate_half", None)
    if original is None or rotate_half is None:
        return False
    if getattr(original, _MARK, False):
        return True
    try:
        params = list(inspect.signature(original).parameters)
    except (TypeError, ValueError):
        return False
    if params[:4] != ["q", "k", "cos", "sin"]:
        return False
    candidate = _token_major(original, rotate_half)
    if not _same(original, candidate):
        return False
    module.apply_rotary_pos_emb = candidate
    return True
