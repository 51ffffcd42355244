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

With `kernels` (`sprint.backends.kernels`, CUDA and Triton) the rotation is one fused kernel for queries and keys
instead of ten elementwise kernels, installed only after the same check on the model's device and dtype (it is
bit-identical too: the same float32 products, rounded at the same points). The installed function is shared by every
model of that modeling module in the process: the last `install_token_major_rope` call decides whether it uses them.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

__all__ = ["install_token_major_rope"]

_MARK = "_sprint_token_major"
# The fused kernels' module while the last install asked for them (see module doc), else None.
_KERNELS: Any = None


def _token_major(original, rotate_half):
    def apply_rotary_pos_emb(q, k, cos, sin, *args, **kwargs):
        unsqueeze = kwargs.get("unsqueeze_dim", 1)
        if args or set(kwargs) - {"unsqueeze_dim"} or unsqueeze != 1 or q.dim() != 4 or k.dim() != 4 or (
                cos.dim() != 3):
            return original(q, k, cos, sin, *args, **kwargs)
        if _KERNELS is not None and _KERNELS.rotary_fits(q, k, cos, sin):
            return _KERNELS.rotary(q, k, cos, sin)
        c, s = cos.unsqueeze(2), sin.unsqueeze(2)   # [batch, tokens, 1, head_dim]
        qt, kt = q.transpose(1, 2), k.transpose(1, 2)
        q_embed = (qt * c) + (rotate_half(qt) * s)
        k_embed = (kt * c) + (rotate_half(kt) * s)
        return q_embed.transpose(1, 2), k_embed.transpose(1, 2)

    setattr(apply_rotary_pos_emb, _MARK, True)
    apply_rotary_pos_emb.__wrapped__ = original
    return apply_rotary_pos_emb


def _same(original, candidate, device="cpu", dtype=None) -> bool:
    """Whether `candidate` returns exactly what `original` does on transposed multi-token views (float32 on the CPU
    unless told otherwise)."""
    import torch

    g = torch.Generator().manual_seed(0)
    tokens, heads, kv_heads, dim = 3, 4, 2, 8
    kw = {"device": device, "dtype": dtype or torch.float32}
    q = torch.randn(1, tokens, heads * dim, generator=g).to(**kw).view(1, tokens, heads, dim).transpose(1, 2)
    k = torch.randn(1, tokens, kv_heads * dim, generator=g).to(**kw).view(1, tokens, kv_heads, dim).transpose(1, 2)
    cos, sin = torch.randn(1, tokens, dim, generator=g).to(**kw), torch.randn(1, tokens, dim, generator=g).to(**kw)
    try:
        want, got = original(q, k, cos, sin), candidate(q, k, cos, sin)
    except Exception:   # noqa: BLE001 - a function of another shape: leave the module alone
        return False
    return all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(want, got))


def install_token_major_rope(model: Any, kernels: Any = None) -> bool:
    """Replace `apply_rotary_pos_emb` in `model`'s modeling module by the token-major version (module doc), which
    rotates through `kernels.rotary` where it takes the operands if `kernels` is given and agrees bit for bit on the
    model's device and dtype. Returns whether the module now has the token-major version (False: the module has no
    such function, or it computes something else)."""
    global _KERNELS

    _KERNELS = None
    module = sys.modules.get(type(model).__module__)
    original = getattr(module, "apply_rotary_pos_emb", None)
    rotate_half = getattr(module, "rotate_half", None)
    if original is None or rotate_half is None:
        return False
    if getattr(original, _MARK, False):
        _KERNELS = _checked(original.__wrapped__, original, kernels, model)
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
    _KERNELS = _checked(original, candidate, kernels, model)
    return True


def _checked(original, candidate, kernels, model):
    """`kernels` if the candidate with them is bit-identical to `original` on the model's device and dtype, else
    None."""
    global _KERNELS

    if kernels is None:
        return None
    p = next(model.parameters())
    _KERNELS = kernels
    try:
        ok = _same(original, candidate, p.device, p.dtype)
    finally:
        _KERNELS = None
    return kernels if ok else None
