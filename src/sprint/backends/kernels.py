"""Fused Triton kernels for the in-process backend's CUDA fast path: RMSNorm, rotary embeddings, SiLU(gate) x up, the
KV write and the decode attention's masked softmax, one kernel each, and the decode attention itself split over the
keys (two kernels).

Why: a small model's decode step is a chain of tiny kernels, each costing its launch and minimum run time (about
1-2.5 us inside a CUDA graph) whatever it computes. The bundled Countdown models' graph step ran about 400 kernels (570
us at one row on an H200, BENCHMARKS.md); transformers' RMSNorm alone is seven kernels (cast, square, mean, add,
rsqrt, multiply, cast back) plus the weight product, the rotary embedding ten (five for the queries, five for the keys),
the decode attention's softmax five (scale, mask inversion, fill, softmax, cast). And at several rows (a SPRINT stage's
planner and executors decoding together) PyTorch's elementwise kernels leave their vectorized path for broadcasts and
strided views and cost up to twice as much: a cost only SPRINT's several streams pay. Here each of those chains is one
kernel that reads its operands with their strides, so one row and eight cost about the same (on an H200 the graph
step went 611 -> 250 us at one row, 818 -> 277 at eight, BENCHMARKS.md).

Numerics: the rotary embedding and the KV write are bit-identical to transformers' (the same float32 products, rounded
to the model's dtype at the same points). RMSNorm sums its squares in another order, SiLU and softmax use the GPU's
fast exponential, and the split attention sums its blocks in another order: those round differently in the last bit
now and then (RMSNorm and the MLP are checked against the model's own modules, with a tolerance, before their forward
is replaced: `install`).

The kernels run on CUDA tensors, or on CPU tensors under Triton's interpreter (`TRITON_INTERPRET=1`, set before this
module is imported), which is how the tests check them without a GPU.
"""

from __future__ import annotations

import logging
import os
import types

import triton
import triton.language as tl

__all__ = ["rms_norm", "rotary", "silu_mul", "kv_write", "masked_softmax", "attention", "install", "usable"]

#: Keys a softmax program reads per pass: rows up to this long are done in one pass, longer ones in two (online).
SOFTMAX_BLOCK = 4096


log = logging.getLogger(__name__)

# Read as Triton reads it when `triton.jit` decorates the kernels below (at import).
_INTERPRET = os.environ.get("TRITON_INTERPRET", "").lower() in ("1", "true", "on", "yes")


def usable(t) -> bool:
    """Whether the kernels can run on tensor `t`'s device (CUDA, or any device under the interpreter)."""
    return t.is_cuda or _INTERPRET


def _warps(block: int) -> int:
    return max(1, min(16, block // 256))


# ---------------------------------------------------------------------------------------------- RMSNorm
@triton.jit(do_not_specialize=["stride_x", "stride_o", "n_cols", "inv_n", "eps"])
def _rms_norm_kernel(x_ptr, w_ptr, o_ptr, stride_x, stride_o, n_cols, inv_n, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    m = cols < n_cols
    x = tl.load(x_ptr + row * stride_x + cols, mask=m, other=0.0).to(tl.float32)
    var = tl.sum(x * x, axis=0) * inv_n
    h = (x * tl.rsqrt(var + eps)).to(o_ptr.dtype.element_ty)
    w = tl.load(w_ptr + cols, mask=m, other=0.0).to(tl.float32)
    tl.store(o_ptr + row * stride_o + cols, (w * h.to(tl.float32)).to(o_ptr.dtype.element_ty), mask=m)


def rms_norm(x, weight, eps: float):
    """transformers' RMSNorm, `weight * (x * rsqrt(mean(x^2) + eps)).to(x.dtype)` computed in float32, over the last
    dimension of `x` (any leading shape that flattens to rows without a copy; the weight in x's dtype)."""
    n = x.shape[-1]
    rows = x.view(-1, n)   # raises for a layout that has no single row stride (the caller falls back)
    out = x.new_empty(x.shape)
    block = triton.next_power_of_2(n)
    _rms_norm_kernel[(rows.shape[0],)](rows, weight, out, rows.stride(0), n, n, 1.0 / n, eps, BLOCK=block,
                                       num_warps=_warps(block))
    return out


# ---------------------------------------------------------------------------------------------- rotary embedding
@triton.jit(do_not_specialize=["T", "n_q", "sq_b", "sq_h", "sq_t", "sk_b", "sk_h", "sk_t", "sc_b", "sc_t"])
def _rotary_kernel(q_ptr, k_ptr, cos_ptr, sin_ptr, qo_ptr, ko_ptr, T, n_q, sq_b, sq_h, sq_t, sk_b, sk_h, sk_t,
                   sc_b, sc_t, N_HEADS: tl.constexpr, HALF: tl.constexpr, BLOCK: tl.constexpr):
    bt = tl.program_id(0).to(tl.int64)   # batch * T + token
    h = tl.program_id(1)                 # query heads first, then key heads
    b = bt // T
    t = bt % T
    d = tl.arange(0, BLOCK)
    m = d < HALF
    c = cos_ptr + b * sc_b + t * sc_t + d
    s = sin_ptr + b * sc_b + t * sc_t + d
    c1 = tl.load(c, mask=m, other=0.0).to(tl.float32)
    c2 = tl.load(c + HALF, mask=m, other=0.0).to(tl.float32)
    s1 = tl.load(s, mask=m, other=0.0).to(tl.float32)
    s2 = tl.load(s + HALF, mask=m, other=0.0).to(tl.float32)
    if h < n_q:
        src = q_ptr + b * sq_b + h * sq_h + t * sq_t
        dst = qo_ptr + (bt * n_q + h) * (2 * HALF)
    else:
        src = k_ptr + b * sk_b + (h - n_q) * sk_h + t * sk_t
        dst = ko_ptr + (bt * (N_HEADS - n_q) + (h - n_q)) * (2 * HALF)
    dt = qo_ptr.dtype.element_ty
    x1 = tl.load(src + d, mask=m, other=0.0).to(tl.float32)
    x2 = tl.load(src + HALF + d, mask=m, other=0.0).to(tl.float32)
    # q * cos + rotate_half(q) * sin, rotate_half(q) = (-x2, x1): each product and the sum rounded to the model's
    # dtype, as PyTorch's elementwise kernels round them (launched without FMA contraction, which would skip the
    # products' rounding in float32).
    o1 = (x1 * c1).to(dt).to(tl.float32) + (-x2 * s1).to(dt).to(tl.float32)
    o2 = (x2 * c2).to(dt).to(tl.float32) + (x1 * s2).to(dt).to(tl.float32)
    tl.store(dst + d, o1.to(dt), mask=m)
    tl.store(dst + HALF + d, o2.to(dt), mask=m)


def rotary(q, k, cos, sin):
    """`apply_rotary_pos_emb` for q [B, Hq, T, D], k [B, Hk, T, D] (any strides with the last dimension contiguous)
    and cos, sin [B, T, D] in q's dtype. Returns the rotated q and k as [B, H, T, D] views of token-major tensors."""
    b, n_q, t, dim = q.shape
    n_k = k.shape[1]
    qo = q.new_empty(b, t, n_q, dim)
    ko = k.new_empty(b, t, n_k, dim)
    half = dim // 2
    _rotary_kernel[(b * t, n_q + n_k)](q, k, cos, sin, qo, ko, t, n_q, *q.stride()[:3], *k.stride()[:3],
                                       cos.stride(0), cos.stride(1), N_HEADS=n_q + n_k, HALF=half,
                                       BLOCK=triton.next_power_of_2(half), num_warps=1, enable_fp_fusion=False)
    return qo.transpose(1, 2), ko.transpose(1, 2)


def rotary_fits(q, k, cos, sin) -> bool:
    """Whether `rotary` takes these operands (else the caller computes it the usual way)."""
    return (q.dim() == 4 and k.dim() == 4 and cos.dim() == 3 and sin.shape == cos.shape and usable(q)
            and q.shape[0] == k.shape[0] == cos.shape[0] and q.shape[2] == k.shape[2] == cos.shape[1]
            and q.shape[3] == k.shape[3] == cos.shape[2] and q.shape[3] % 2 == 0
            and q.dtype == k.dtype == cos.dtype == sin.dtype
            and q.stride(3) == k.stride(3) == cos.stride(2) == 1 and sin.stride() == cos.stride())


# ---------------------------------------------------------------------------------------------- SiLU(gate) x up
@triton.jit(do_not_specialize=["stride_g", "stride_u", "stride_o", "n_cols"])
def _silu_mul_kernel(g_ptr, u_ptr, o_ptr, stride_g, stride_u, stride_o, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = cols < n_cols
    dt = o_ptr.dtype.element_ty
    g = tl.load(g_ptr + row * stride_g + cols, mask=m, other=0.0).to(tl.float32)
    u = tl.load(u_ptr + row * stride_u + cols, mask=m, other=0.0).to(tl.float32)
    act = (g / (1.0 + tl.exp(-g))).to(dt).to(tl.float32)
    tl.store(o_ptr + row * stride_o + cols, (act * u).to(dt), mask=m)


def silu_mul(gate, up):
    """`silu(gate) * up` for gate, up [..., I] of one dtype (rows may be strided, such as slices of one fused
    product)."""
    n = gate.shape[-1]
    g, u = gate.view(-1, n), up.view(-1, n)
    out = gate.new_empty(gate.shape)
    block = min(1024, triton.next_power_of_2(n))
    _silu_mul_kernel[(g.shape[0], triton.cdiv(n, block))](g, u, out, g.stride(0), u.stride(0), n, n, BLOCK=block,
                                                          num_warps=_warps(block))
    return out


# ---------------------------------------------------------------------------------------------- KV write
@triton.jit(do_not_specialize=["sk_n", "sk_h", "sv_n", "sv_h", "sc_s", "sc_h", "sc_p"])
def _kv_write_kernel(k_ptr, v_ptr, kc_ptr, vc_ptr, slot_ptr, pos_ptr, sk_n, sk_h, sv_n, sv_h, sc_s, sc_h, sc_p,
                     DIM: tl.constexpr, BLOCK: tl.constexpr):
    n = tl.program_id(0)
    h = tl.program_id(1).to(tl.int64)
    slot = tl.load(slot_ptr + n).to(tl.int64)
    pos = tl.load(pos_ptr + n).to(tl.int64)
    d = tl.arange(0, BLOCK)
    m = d < DIM
    n = n.to(tl.int64)
    dst = slot * sc_s + h * sc_h + pos * sc_p + d
    tl.store(kc_ptr + dst, tl.load(k_ptr + n * sk_n + h * sk_h + d, mask=m), mask=m)
    tl.store(vc_ptr + dst, tl.load(v_ptr + n * sv_n + h * sv_h + d, mask=m), mask=m)


def kv_write(keys, values, key, value, slots, positions) -> None:
    """`keys[slots[i], :, positions[i]] = key[i]` and the same for values, for key, value [N, H, D] (any strides,
    last dimension contiguous) and the buffers [slots, H, capacity, D] (one layout for both)."""
    n, heads, dim = key.shape
    _kv_write_kernel[(n, heads)](key, value, keys, values, slots, positions, key.stride(0), key.stride(1),
                                 value.stride(0), value.stride(1), keys.stride(0), keys.stride(1), keys.stride(2),
                                 DIM=dim, BLOCK=triton.next_power_of_2(dim), num_warps=1)


def kv_write_fits(keys, values, key, value) -> bool:
    return (usable(key) and key.dim() == 3 and key.shape == value.shape and keys.stride() == values.stride()
            and keys.dtype == key.dtype == value.dtype == values.dtype and key.stride(2) == value.stride(2) == 1
            and keys.stride(3) == 1 and keys.shape[1] == key.shape[1] and keys.shape[3] == key.shape[2])


# ---------------------------------------------------------------------------------------------- masked softmax
@triton.jit
def _masked_scores(s_ptr, mask_ptr, r, c, n, heads, group, scale, m_b, m_g, HAS_MASK: tl.constexpr):
    """Row r's scores at columns c, scaled, -inf where masked out or past the row; and where they are visible."""
    ok = c < n
    x = tl.load(s_ptr + r * n + c, mask=ok, other=float("-inf")) * scale
    if HAS_MASK:
        mrow = mask_ptr + (r // (heads * group)) * m_b + (r % group) * m_g
        ok = ok & (tl.load(mrow + c, mask=c < n, other=0) != 0)
        x = tl.where(ok, x, float("-inf"))
    return x, ok


@triton.jit(do_not_specialize=["n", "heads", "group", "scale", "m_b", "m_g"])
def _softmax_kernel(s_ptr, mask_ptr, p_ptr, n, heads, group, scale, m_b, m_g, HAS_MASK: tl.constexpr,
                    BLOCK: tl.constexpr):
    r = tl.program_id(0).to(tl.int64)   # (batch, head, query row) flattened
    c = tl.arange(0, BLOCK)
    x, ok = _masked_scores(s_ptr, mask_ptr, r, c, n, heads, group, scale, m_b, m_g, HAS_MASK)
    e = tl.where(ok, tl.exp(x - tl.max(x, axis=0)), 0.0)
    tl.store(p_ptr + r * n + c, (e / tl.sum(e, axis=0)).to(p_ptr.dtype.element_ty), mask=c < n)


@triton.jit(do_not_specialize=["n", "heads", "group", "scale", "m_b", "m_g", "blocks"])
def _softmax_part_kernel(s_ptr, mask_ptr, part_ptr, n, heads, group, scale, m_b, m_g, blocks,
                         HAS_MASK: tl.constexpr, BLOCK: tl.constexpr):
    r = tl.program_id(0).to(tl.int64)
    j = tl.program_id(1)
    x, ok = _masked_scores(s_ptr, mask_ptr, r, j * BLOCK + tl.arange(0, BLOCK), n, heads, group, scale, m_b, m_g,
                           HAS_MASK)
    top = tl.max(x, axis=0)
    total = tl.sum(tl.where(ok, tl.exp(x - top), 0.0), axis=0)
    tl.store(part_ptr + (r * blocks + j) * 2, top)
    tl.store(part_ptr + (r * blocks + j) * 2 + 1, total)


@triton.jit(do_not_specialize=["n", "heads", "group", "scale", "m_b", "m_g", "blocks"])
def _softmax_finish_kernel(s_ptr, mask_ptr, part_ptr, p_ptr, n, heads, group, scale, m_b, m_g, blocks,
                           HAS_MASK: tl.constexpr, BLOCK: tl.constexpr, PARTS: tl.constexpr):
    r = tl.program_id(0).to(tl.int64)
    j = tl.program_id(1)
    i = tl.arange(0, PARTS)
    tops = tl.load(part_ptr + (r * blocks + i) * 2, mask=i < blocks, other=float("-inf"))
    sums = tl.load(part_ptr + (r * blocks + i) * 2 + 1, mask=i < blocks, other=0.0)
    top = tl.max(tops, axis=0)
    total = tl.sum(tl.where(tops > float("-inf"), sums * tl.exp(tops - top), 0.0), axis=0)
    c = j * BLOCK + tl.arange(0, BLOCK)
    x, ok = _masked_scores(s_ptr, mask_ptr, r, c, n, heads, group, scale, m_b, m_g, HAS_MASK)
    e = tl.where(ok, tl.exp(x - top), 0.0)
    tl.store(p_ptr + r * n + c, (e / total).to(p_ptr.dtype.element_ty), mask=c < n)


def masked_softmax(scores, mask, scale: float, dtype):
    """softmax(scores * scale) over the last dimension, masked-out keys (mask False) at probability 0, in `dtype`:
    scores float32 [B, H, G, K] contiguous, mask None or bool [B, 1, G, K] (any strides, last dimension contiguous;
    every row sees at least one key). Rows up to SOFTMAX_BLOCK keys: one kernel, a program per row; longer rows: one
    kernel for each block's maximum and sum, one that combines them and writes the block (no loop over a row)."""
    import torch

    b, h, g, n = scores.shape
    rows = b * h * g
    out = scores.new_empty(scores.shape, dtype=dtype)
    block = min(SOFTMAX_BLOCK, triton.next_power_of_2(n))
    if mask is None:
        m, m_b, m_g = scores, 0, 0   # an unused pointer
    else:
        m, m_b, m_g = mask.view(torch.uint8), mask.stride(0), mask.stride(2)
    args = (n, h, g, scale, m_b, m_g)
    warps = _warps(block) if block > 256 else 2
    if n <= block:
        _softmax_kernel[(rows,)](scores, m, out, *args, HAS_MASK=mask is not None, BLOCK=block, num_warps=warps)
        return out
    blocks = triton.cdiv(n, block)
    parts = scores.new_empty(rows, blocks, 2)
    _softmax_part_kernel[(rows, blocks)](scores, m, parts, *args, blocks, HAS_MASK=mask is not None, BLOCK=block,
                                         num_warps=warps)
    _softmax_finish_kernel[(rows, blocks)](scores, m, parts, out, *args, blocks, HAS_MASK=mask is not None,
                                           BLOCK=block, PARTS=triton.next_power_of_2(blocks), num_warps=warps)
    return out


def softmax_fits(scores, mask) -> bool:
    return (usable(scores) and scores.dim() == 4 and scores.is_contiguous() and (mask is None or (
        mask.dim() == 4 and mask.shape[1] == 1 and mask.shape[0] == scores.shape[0] and mask.shape[2:] ==
        scores.shape[2:] and mask.stride(3) == 1)))


# ---------------------------------------------------------------------------------------------- decode attention
#: Keys per block of the split attention, and about how many programs a call should spread over (256 left each
#: program of an 8-slot step at 4,096 keys eight blocks to walk: 495 us per step against the matrix products' 415 on
#: an H200, BENCHMARKS.md).
ATTENTION_BLOCK_N = 64
ATTENTION_PROGRAMS = 1024
#: Query rows per (slot, KV head) the split attention takes (decode steps and short prefills; more: matrix products).
ATTENTION_MAX_ROWS = 64
#: Slots x keys the split attention takes; more go to the matrix products, which were faster there on an H200 (8
#: slots at 4,096 keys: 498 against 415 us per step; at 2,048 keys 357 against 351; fewer slots or keys: the split
#: kernels faster, e.g. 8 slots at 256 keys 262 against 277 us, 1 slot at 4,096 keys 288 against 332; BENCHMARKS.md).
ATTENTION_MAX_SLOT_KEYS = 16384
#: One query row per (slot, KV head) (decode steps of models without GQA) at this many slots x keys or more runs
#: without tl.dot (whose operands are padded to 16 rows), one warp per program: on an H100, 8 layers' attention of 8
#: slots at 2,048 keys 116 us against 122 with tl.dot (91 against 110 with a shared prefix), at 4,096 keys 206
#: against 289; below it tl.dot was faster (1 slot: 42-56 us against 58-74; `bench_shared_attention.py`).
ATTENTION_ONE_ROW_MIN_SLOT_KEYS = 16384
ATTENTION_ONE_ROW_WARPS = 1


@triton.jit
def _slot_head_program(heads):
    """The split attention's program ids: (slot x head flattened, its slot, its head, the second program id)."""
    bh = tl.program_id(0).to(tl.int64)
    return bh, bh // heads, bh % heads, tl.program_id(1)


@triton.jit
def _online_softmax(s, ok, top, total):
    """One block of scores s [rows, keys] (visible where `ok`) into the running maximum `top` and sum `total`:
    returns (probabilities, the factor the earlier sums and outputs are scaled by, total, top)."""
    s = tl.where(ok, s, float("-inf"))
    new = tl.maximum(top, tl.max(s, axis=1))
    safe = tl.where(new == float("-inf"), 0.0, new)   # a row with nothing visible yet: no NaN
    p = tl.where(ok, tl.exp(s - safe[:, None]), 0.0)
    alpha = tl.where(top == float("-inf"), 0.0, tl.exp(top - safe))
    return p, alpha, total * alpha + tl.sum(p, axis=1), new


@triton.jit
def _scores(q, k, scale, IEEE: tl.constexpr):
    """q [rows, d] against k [keys, d]: float32 scores [rows, keys] (tf32 would round them to 10-bit mantissas)."""
    if IEEE:
        s = tl.dot(q, tl.trans(k), input_precision="ieee")
    else:
        s = tl.dot(q, tl.trans(k))
    return s * scale


@triton.jit
def _weighted(p, v, IEEE: tl.constexpr):
    """Probabilities p [rows, keys] (rounded to the values' dtype, as the matrix-product path does) times v."""
    if IEEE:
        pv = tl.dot(p.to(v.dtype), v, input_precision="ieee")
    else:
        pv = tl.dot(p.to(v.dtype), v)
    return pv


@triton.jit
def _store_part(base, top, total, acc, ok, d):
    tl.store(base, top, mask=ok)
    tl.store(base + 1, total, mask=ok)
    tl.store(base[:, None] + 2 + d[None, :], acc, mask=ok[:, None])


@triton.jit
def _attend_slot(q_ptr, k_ptr, v_ptr, mask_ptr, b, h, first, src, shared, n_keys, rows, scale, sq_b, sq_h,
                 sq_g, sk_b, sk_h, sk_n, sv_b, sv_h, sv_n, m_b, m_g, HAS_MASK: tl.constexpr, SHARED: tl.constexpr,
                 DIM: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr, ITERS: tl.constexpr,
                 IEEE: tl.constexpr):
    """Slot b's query rows against its keys `first` .. `first` + ITERS x BLOCK_N - 1: (running maximum, sum,
    unnormalised outputs) of the online softmax. With SHARED, whole blocks before `shared` are read from slot `src`
    (see `_attention_part_kernel`)."""
    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, DIM)
    q = tl.load(q_ptr + b * sq_b + h * sq_h + g[:, None] * sq_g + d[None, :], mask=g[:, None] < rows, other=0.0)
    top = tl.full([BLOCK_G], float("-inf"), tl.float32)
    total = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, DIM], tl.float32)
    for i in range(ITERS):
        n = first + i * BLOCK_N + tl.arange(0, BLOCK_N)
        if SHARED:   # per block, not per key: one base address per load keeps it as fast as the plain one
            kb = tl.where(first + (i + 1) * BLOCK_N <= shared, src, b)
        else:
            kb = b
        here = n < n_keys
        k = tl.load(k_ptr + kb * sk_b + h * sk_h + n[:, None] * sk_n + d[None, :], mask=here[:, None], other=0.0)
        v = tl.load(v_ptr + kb * sv_b + h * sv_h + n[:, None] * sv_n + d[None, :], mask=here[:, None],
                    other=0.0)   # issued with the keys: its latency overlaps the scores
        if BLOCK_G == 1:   # one query row (a decode step without GQA): products and sums, no 16-row padded tl.dot
            s = tl.sum(q.to(tl.float32) * k.to(tl.float32), axis=1)[None, :] * scale
        else:
            s = _scores(q, k, scale, IEEE)   # [BLOCK_G, BLOCK_N], float32
        ok = (g[:, None] < rows) & here[None, :]
        if HAS_MASK:
            ok = ok & (tl.load(mask_ptr + b * m_b + g[:, None] * m_g + n[None, :], mask=ok, other=0) != 0)
        p, alpha, total, top = _online_softmax(s, ok, top, total)
        if BLOCK_G == 1:   # the probabilities rounded to the values' dtype, as `_weighted` rounds them
            pv = tl.sum(p.to(v.dtype).to(tl.float32).reshape(BLOCK_N, 1) * v.to(tl.float32), axis=0)
            acc = acc * alpha[:, None] + pv[None, :]
        else:
            acc = acc * alpha[:, None] + _weighted(p, v, IEEE)
    return top, total, acc


@triton.jit(do_not_specialize=["n_keys", "rows", "scale", "sq_b", "sq_h", "sq_g", "sk_b", "sk_h", "sk_n",
                               "sv_b", "sv_h", "sv_n", "m_b", "m_g", "splits", "s_src", "s_len"])
def _attention_part_kernel(q_ptr, k_ptr, v_ptr, mask_ptr, part_ptr, src_ptr, len_ptr, n_keys, rows, heads, scale,
                           sq_b, sq_h, sq_g, sk_b, sk_h, sk_n, sv_b, sv_h, sv_n, m_b, m_g, splits, s_src, s_len,
                           HAS_MASK: tl.constexpr, SHARED: tl.constexpr, DIM: tl.constexpr, BLOCK_G: tl.constexpr,
                           BLOCK_N: tl.constexpr, ITERS: tl.constexpr, IEEE: tl.constexpr):
    bh, b, h, split = _slot_head_program(heads)
    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, DIM)
    src, shared = b, 0
    if SHARED:   # keys 0 .. shared-1 of slot b are a copy of slot src's: blocks of them are read from src (the
        # copies of one prefix that several slots hold are then one piece of memory, read once from DRAM and then
        # from the L2 cache); a block that reaches past them is read from slot b, which holds its own copy
        src = tl.load(src_ptr + b * s_src).to(tl.int64)
        shared = tl.load(len_ptr + b * s_len)
    top, total, acc = _attend_slot(q_ptr, k_ptr, v_ptr, mask_ptr, b, h, split * ITERS * BLOCK_N, src, shared,
                                   n_keys, rows, scale, sq_b, sq_h, sq_g, sk_b, sk_h, sk_n, sv_b, sv_h, sv_n, m_b,
                                   m_g, HAS_MASK, SHARED, DIM, BLOCK_G, BLOCK_N, ITERS, IEEE)
    # Partials [bh, split, row]: the maximum, the sum, then the DIM unnormalised outputs; real rows only (a decode
    # step has one of BLOCK_G: the padding rows' stores were most of the kernel's writes).
    _store_part(part_ptr + ((bh * splits + split) * BLOCK_G + g) * (DIM + 2), top, total, acc, g < rows, d)


@triton.jit(do_not_specialize=["rows", "so_b", "so_h", "so_g", "splits"])
def _attention_join_kernel(part_ptr, o_ptr, rows, heads, so_b, so_h, so_g, splits, DIM: tl.constexpr,
                           BLOCK_G: tl.constexpr, SPLITS: tl.constexpr):
    bh, b, h, g = _slot_head_program(heads)
    sp = tl.arange(0, SPLITS)
    d = tl.arange(0, DIM)
    base = part_ptr + ((bh * splits + sp) * BLOCK_G + g) * (DIM + 2)
    tops = tl.load(base, mask=sp < splits, other=float("-inf"))
    sums = tl.load(base + 1, mask=sp < splits, other=0.0)
    top = tl.max(tops, axis=0)
    w = tl.where(tops > float("-inf"), tl.exp(tops - top), 0.0)
    acc = tl.load(base[:, None] + 2 + d[None, :], mask=sp[:, None] < splits, other=0.0)
    out = tl.sum(acc * w[:, None], axis=0) / tl.sum(sums * w, axis=0)
    tl.store(o_ptr + b * so_b + h * so_h + g * so_g + d, out.to(o_ptr.dtype.element_ty))


# Set when the split attention failed to compile or launch on this machine (logged once): the matrix products then.
_ATTENTION_FAILED = False


def attention_fits(q, k, v, mask) -> bool:
    """Whether `attention` takes these operands: q [B, H, G, d], k, v [B, H, K, d] (last dimensions contiguous, d a
    power of two >= 16, one dtype), G <= ATTENTION_MAX_ROWS, B * K <= ATTENTION_MAX_SLOT_KEYS, mask None or
    [B, 1, G, K] (last dimension contiguous)."""
    d = q.shape[-1]
    return (not _ATTENTION_FAILED and usable(q) and q.dim() == 4 and k.shape == v.shape and k.shape[:2] == q.shape[:2] and k.shape[3] == d
            and d >= 16 and d & (d - 1) == 0 and q.shape[2] <= ATTENTION_MAX_ROWS and q.dtype == k.dtype == v.dtype
            and q.shape[0] * k.shape[2] <= ATTENTION_MAX_SLOT_KEYS
            and q.stride(3) == k.stride(3) == v.stride(3) == 1 and (mask is None or (
                mask.dim() == 4 and mask.shape[0] == q.shape[0] and mask.shape[1] == 1
                and mask.shape[2] == q.shape[2] and mask.shape[3] == k.shape[2] and mask.stride(3) == 1)))


def attention(q, k, v, mask, scale: float, shared=None):
    """softmax(q k^T * scale, masked) v for every (slot, head): the keys split over up to ATTENTION_PROGRAMS programs
    (flash decoding: each a running maximum, sum and weighted values over its keys), then one program per query row
    combines the splits. Two kernels, whatever the number of keys; float32 scores and sums, probabilities rounded to
    the values' dtype for their product (as the matrix-product path does). Returns [B, H, G, d] in q's dtype, or None
    when the kernels cannot be built or launched here (a shape beyond the GPU's resources, say: logged once, and
    `attention_fits` says no from then on).

    `shared` (optional): integer tensors (src [B], length [B]) saying that keys 0 .. length[b]-1 of slot b equal
    those of slot src[b] (b itself where nothing is shared), slots counted from k's first; those keys are read from
    slot src[b]. Slots that copied one prefix (a SPRINT stage's executors, from their planner) then read one copy
    of it, which the GPU's L2 cache serves after the first read. The result is the same either way."""
    global _ATTENTION_FAILED

    try:
        return _attention(q, k, v, mask, scale, shared)
    except Exception as e:   # noqa: BLE001 - compiling or launching: the caller computes it the usual way
        if not _ATTENTION_FAILED:
            log.warning("split decode attention unavailable (%s: %s); using matrix products", type(e).__name__, e)
        _ATTENTION_FAILED = True
        return None


def _attention(q, k, v, mask, scale: float, shared=None):
    import torch

    b, h, rows, dim = q.shape
    n_keys = k.shape[2]
    one_row = rows == 1 and b * n_keys >= ATTENTION_ONE_ROW_MIN_SLOT_KEYS
    block_g = 1 if one_row else max(16, triton.next_power_of_2(rows))
    blocks = triton.cdiv(n_keys, ATTENTION_BLOCK_N)
    per_program = triton.next_power_of_2(triton.cdiv(blocks, max(1, ATTENTION_PROGRAMS // (b * h))))
    splits = triton.cdiv(blocks, per_program)
    part = torch.empty((b * h, splits, block_g, dim + 2), dtype=torch.float32, device=q.device)
    out = q.new_empty(q.shape)
    if mask is None:
        m, m_b, m_g = q, 0, 0   # an unused pointer
    else:
        m, m_b, m_g = mask.view(torch.uint8), mask.stride(0), mask.stride(2)
    src, length = shared if shared is not None else (q, q)   # unused pointers without sharing
    s_src, s_len = (src.stride(0), length.stride(0)) if shared is not None else (0, 0)
    ieee = q.dtype == torch.float32
    _attention_part_kernel[(b * h, splits)](
        q, k, v, m, part, src, length, n_keys, rows, h, scale, *q.stride()[:3], *k.stride()[:3], *v.stride()[:3],
        m_b, m_g, splits, s_src, s_len, HAS_MASK=mask is not None, SHARED=shared is not None, DIM=dim,
        BLOCK_G=block_g, BLOCK_N=ATTENTION_BLOCK_N, ITERS=per_program, IEEE=ieee,
        num_warps=ATTENTION_ONE_ROW_WARPS if block_g == 1 else 4)
    _attention_join_kernel[(b * h, rows)](part, out, rows, h, *out.stride()[:3], splits, DIM=dim, BLOCK_G=block_g,
                                          SPLITS=triton.next_power_of_2(splits), num_warps=1)
    return out


# ---------------------------------------------------------------------------------------------- installing
def _rms_forward(self, x):
    if usable(x) and x.dtype == self.weight.dtype and x.stride(-1) == 1:
        try:
            return rms_norm(x, self.weight, self.variance_epsilon)
        except RuntimeError:   # no single row stride (a strided slice): the module's own arithmetic
            pass
    return type(self).forward(self, x)


def _mlp_forward(self, x):
    gate, up = self.gate_proj(x), self.up_proj(x)
    if usable(gate) and gate.shape == up.shape and gate.dtype == up.dtype and gate.stride(-1) == up.stride(-1) == 1:
        try:
            return self.down_proj(silu_mul(gate, up))
        except RuntimeError:
            pass
    return self.down_proj(self.act_fn(gate) * up)


def _agrees(module, patched, x) -> bool:
    """Whether `patched` computes what the module's own forward does on `x` (to the model dtype's rounding); False
    also when either fails on it (a module that wants other inputs is left alone)."""
    import torch

    try:
        with torch.no_grad():
            want, got = type(module).forward(module, x), patched(x)
    except Exception:   # noqa: BLE001 - any failure: not this module
        return False
    tol = 1e-5 if x.dtype == torch.float32 else 2e-2
    return want.shape == got.shape and want.dtype == got.dtype and bool(torch.allclose(want.float(), got.float(),
                                                                                       rtol=tol, atol=tol))


def install(model) -> dict[str, int]:
    """Replace, module by module, the forward of every RMSNorm (a module named `*RMSNorm` with a 1-D `weight` and a
    `variance_epsilon`) and every gated MLP (`gate_proj`, `up_proj`, `down_proj`, `act_fn`) of `model` by the fused
    kernels, each only after checking that it computes what the module's own forward does on a random input of the
    model's dtype and device (a module that computes something else, Gemma's `1 + weight` say, is left alone). Returns
    how many of each were replaced. The rotary embedding goes through `sprint.backends.rope`."""
    import torch

    counts = {"rms_norm": 0, "mlp": 0}
    gen = torch.Generator(device="cpu").manual_seed(0)
    for module in model.modules():
        if type(module).__name__.endswith("RMSNorm") and isinstance(getattr(module, "weight", None), torch.Tensor) \
                and module.weight.dim() == 1 and isinstance(getattr(module, "variance_epsilon", None), float):
            w = module.weight
            x = torch.randn(3, w.shape[0], generator=gen).to(device=w.device, dtype=w.dtype)
            patched = types.MethodType(_rms_forward, module)
            if usable(w) and _agrees(module, patched, x):
                module.forward = patched
                counts["rms_norm"] += 1
        elif all(isinstance(getattr(module, n, None), torch.nn.Module) for n in ("gate_proj", "up_proj", "down_proj")) \
                and callable(getattr(module, "act_fn", None)) and hasattr(module.gate_proj, "in_features"):
            w = module.down_proj.weight
            x = torch.randn(3, module.gate_proj.in_features, generator=gen).to(device=w.device, dtype=w.dtype)
            patched = types.MethodType(_mlp_forward, module)
            if usable(w) and _agrees(module, patched, x):
                module.forward = patched
                counts["mlp"] += 1
    return counts
