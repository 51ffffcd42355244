"""Decode-step attention on a GPU: a few query rows per slot against thousands of cached keys.

Why not `scaled_dot_product_attention`: with a key-length mask it runs the memory-efficient kernel, which spreads a
call over (slot, head, query block) only. A decode step has one query block, so the bundled Countdown models' 4 heads
give 4 thread blocks per slot, each walking every key in turn: on an H200 the graph step grew from 0.8 ms at 256 keys
by about 0.6 ms per 1,000 keys (the sequential model's longest solves paid 2-3 ms per token at 4,000 positions). The
two matrix products below spread the keys over the whole GPU instead (cuBLAS parallelises over the key dimension),
so the cost per step hardly grows with the context.

Numerics follow the flash kernels': scores in float32 (a bfloat16 score near 20 would be off by up to 0.06 before
the exponential), softmax in float32, probabilities rounded to the values' dtype for the second product, whose float32
accumulation is rounded once.
"""

from __future__ import annotations

__all__ = ["decode_attention", "probe"]

# torch.bmm(..., out_dtype=float32) keeps half-precision inputs and returns float32 scores (CUDA, PyTorch >= 2.8).
_BMM_OUT_DTYPE: bool | None = None


def probe(device) -> bool:
    """Settle once, outside any CUDA-graph capture, whether `torch.bmm` takes `out_dtype` on `device` (a failed op
    inside a capture would spoil the graph). Returns the answer."""
    import torch

    global _BMM_OUT_DTYPE
    if _BMM_OUT_DTYPE is None:
        x = torch.zeros(1, 1, 1, dtype=torch.bfloat16, device=device)
        try:
            torch.bmm(x, x, out_dtype=torch.float32)
            _BMM_OUT_DTYPE = True
        except (TypeError, RuntimeError, NotImplementedError):
            _BMM_OUT_DTYPE = False
    return _BMM_OUT_DTYPE


def _scores(q, k):
    """q [n, g, d] @ k[n, K, d]^T in float32, without a float32 copy of the keys where PyTorch allows it."""
    import torch

    if q.dtype == torch.float32:
        return torch.bmm(q, k.transpose(1, 2))
    if q.is_cuda and probe(q.device):
        return torch.bmm(q, k.transpose(1, 2), out_dtype=torch.float32)
    # Older PyTorch or another device: float32 copies (the same numbers, more memory traffic).
    return torch.bmm(q.float(), k.float().transpose(1, 2))


def decode_attention(q, k, v, mask, scale: float | None, kernels=None, shared=None):
    """Attention of q [B, H, G, d] (G query rows per KV head) over k, v [B, H, K, d] (views of the slot buffers;
    any strides with the head dimension inside the slot's) with `mask` None or bool [B, 1, G, K] (True: the key is
    visible; every row sees at least one key). Returns [B, H, G, d] in q's dtype. `kernels`
    (`sprint.backends.kernels`): the whole attention in two kernels where it takes the shapes (decode steps and short
    prefills), else scale, mask and softmax in one fused kernel between the two products. `shared`: which slots' first
    keys are copies of another slot's (`kernels.attention`; the split kernels read them there, the products ignore
    it: the copies hold the same keys)."""
    import torch

    b, h, g, d = q.shape
    n = k.shape[2]
    scale = d ** -0.5 if scale is None else scale
    if kernels is not None and kernels.attention_fits(q, k, v, mask):
        out = kernels.attention(q, k, v, mask, scale, shared)   # split over the keys, two kernels
        if out is not None:
            return out
    s = _scores(q.reshape(b * h, g, d), k.reshape(b * h, n, d)).view(b, h, g, n)
    if kernels is not None and kernels.softmax_fits(s, mask):
        p = kernels.masked_softmax(s, mask, scale, v.dtype)
        return torch.bmm(p.view(b * h, g, n), v.reshape(b * h, n, d)).view(b, h, g, d).to(q.dtype)
    s.mul_(scale)   # in place: a long prefill's scores are [heads, rows, keys] floats, hundreds of MB
    if mask is not None:
        s.masked_fill_(~mask, float("-inf"))
    p = torch.softmax(s, dim=-1).to(v.dtype)
    out = torch.bmm(p.view(b * h, g, n), v.reshape(b * h, n, d))
    return out.view(b, h, g, d).to(q.dtype)
