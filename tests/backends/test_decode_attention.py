"""decode_attention against scaled_dot_product_attention: the same numbers, any strides, masks, GQA rows."""

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from sprint.backends.decode_attention import decode_attention  # noqa: E402


def _case(b=3, h=4, g=2, d=16, cap=96, n=80, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ks = torch.randn(b + 1, h, cap, d, generator=gen).to(dtype)   # one slot more, capacity beyond n: strided views
    vs = torch.randn(b + 1, h, cap, d, generator=gen).to(dtype)
    q = torch.randn(b, h, g, d, generator=gen).to(dtype)
    lengths = torch.tensor([n, 1, n // 2][:b])
    mask = (torch.arange(n)[None, :] < lengths[:, None])[:, None, None, :].expand(b, 1, g, n)
    return q, ks[:b, :, :n], vs[:b, :, :n], mask


@pytest.mark.parametrize("masked", [True, False])
def test_matches_sdpa_float32(masked):
    q, k, v, mask = _case()
    m = mask if masked else None
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=m, scale=0.3)
    got = decode_attention(q, k, v, m, 0.3)
    assert got.shape == want.shape and got.dtype == q.dtype
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_row_with_one_visible_key_returns_that_value():
    q, k, v, mask = _case()
    got = decode_attention(q, k, v, mask, None)
    torch.testing.assert_close(got[1], v[1, :, :1].expand(-1, q.shape[2], -1))


def test_bfloat16_scores_kept_in_float32():
    # Large scores: rounding them to bfloat16 before the softmax would move the weights visibly.
    q, k, v, mask = _case(dtype=torch.float32, seed=1)
    q = q * 6
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    got = decode_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask, None).float()
    # Inputs rounded to bfloat16 (8 bits) and the probabilities once: a few hundredths at most.
    assert (got - want).abs().max().item() < 0.05


def test_default_scale_is_inverse_sqrt_head_dim():
    q, k, v, _ = _case()
    torch.testing.assert_close(decode_attention(q, k, v, None, None),
                               decode_attention(q, k, v, None, q.shape[-1] ** -0.5))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bfloat16_close_to_float32_sdpa():
    # The CUDA path (bf16 scores returned in float32 by torch.bmm's out_dtype where PyTorch has it), against SDPA in
    # float32 on the same bf16-rounded inputs, with thousands of keys as in a long decode step.
    q, k, v, mask = _case(b=3, h=4, g=1, d=64, cap=4200, n=4096, seed=2)
    q, k, v, mask = (t.cuda() for t in (q * 4, k, v, mask))
    qb, kb, vb = q.bfloat16(), k.bfloat16(), v.bfloat16()
    want = F.scaled_dot_product_attention(qb.float(), kb.float(), vb.float(), attn_mask=mask)
    got = decode_attention(qb, kb, vb, mask, None).float()
    assert (got - want).abs().max().item() < 0.02
