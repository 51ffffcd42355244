"""The fused Triton kernels (`sprint.backends.kernels`) against the PyTorch arithmetic they replace: on a GPU when
there is one, else on the CPU under Triton's interpreter (skipped where Triton is not installed)."""

from __future__ import annotations

import importlib
import os

import pytest

torch = pytest.importorskip("torch")

CUDA = torch.cuda.is_available()
DEV = "cuda" if CUDA else "cpu"


def _load_kernels():
    """The kernels module, under Triton's interpreter when there is no GPU. Triton decides at decoration time, for
    its own library functions too: the variable must be set before Triton is first imported in this process."""
    import sys

    if not CUDA:
        if "triton" in sys.modules and not os.environ.get("TRITON_INTERPRET"):
            pytest.skip("Triton was imported without its interpreter before these tests", allow_module_level=True)
        os.environ["TRITON_INTERPRET"] = "1"
    pytest.importorskip("triton")
    module = importlib.import_module("sprint.backends.kernels")
    if not CUDA and not module._INTERPRET:
        module = importlib.reload(module)
    return module


kernels = _load_kernels()
DTYPES = [torch.float32, torch.bfloat16]
# Triton's interpreter truncates float32 -> bfloat16 where a GPU rounds to nearest (as PyTorch does): bit-identical
# bfloat16 results can only be asserted on a GPU; under the interpreter they may be a rounding step off.
BF16_EXACT = CUDA


def _ulps_apart(a, b, dtype) -> float:
    """The largest difference between a and b in units of the dtype's rounding at b's magnitude."""
    eps = torch.finfo(dtype).eps
    return float(((a.float() - b.float()).abs() / (b.float().abs() * eps).clamp_min(torch.finfo(dtype).tiny)).max())


@pytest.mark.parametrize("dtype", DTYPES)
def test_rms_norm_matches_transformers_on_strided_rows(dtype):
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    g = torch.Generator().manual_seed(0)
    norm = LlamaRMSNorm(48, eps=1e-6).to(DEV, dtype)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(48, generator=g))
    wide = torch.randn(2, 5, 80, generator=g).to(DEV, dtype)
    x = wide[:, :, 8:56]   # rows 80 apart: a slice of a wider product
    with torch.no_grad():
        want = norm(x)
    got = kernels.rms_norm(x, norm.weight, norm.variance_epsilon)
    assert got.shape == want.shape and got.dtype == want.dtype
    # Sums of squares in another order: at most a rounding step apart (bf16), 1e-6 relative (float32).
    assert _ulps_apart(got, want, dtype) <= (8 if dtype == torch.float32 else 1.01 if BF16_EXACT else 2.01)
    if dtype == torch.bfloat16 and BF16_EXACT:   # the rounding to bf16 hides most of the float32 differences
        assert (got == want).float().mean() > 0.9


@pytest.mark.parametrize("dtype", DTYPES)
def test_rotary_is_bit_identical_to_transformers(dtype):
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    g = torch.Generator().manual_seed(1)
    b, t, hq, hk, d = 2, 3, 4, 2, 16
    fused = torch.randn(b, t, (hq + 2 * hk) * d, generator=g).to(DEV, dtype)   # a fused q/k/v product
    q = fused[..., :hq * d].view(b, t, hq, d).transpose(1, 2)
    k = fused[..., hq * d:(hq + hk) * d].view(b, t, hk, d).transpose(1, 2)
    cos = torch.randn(b, t, d, generator=g).to(DEV, dtype)
    sin = torch.randn(b, t, d, generator=g).to(DEV, dtype)
    assert kernels.rotary_fits(q, k, cos, sin)
    want = apply_rotary_pos_emb(q, k, cos, sin)
    got = kernels.rotary(q, k, cos, sin)
    for w, o in zip(want, got):
        assert o.shape == w.shape
        if dtype == torch.float32 or BF16_EXACT:
            assert torch.equal(o, w)
        else:   # truncated products: off by a rounding step of the products, not of their (cancelling) sum
            step = 2 * torch.finfo(dtype).eps * float(fused.abs().max() * cos.abs().max())
            assert torch.allclose(o.float(), w.float(), rtol=0, atol=step)


@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_mul_matches_pytorch_on_slices_of_one_product(dtype):
    g = torch.Generator().manual_seed(2)
    fused = torch.randn(1, 6, 2 * 40, generator=g).to(DEV, dtype) * 4
    gate, up = fused.split(40, dim=-1)
    want = torch.nn.functional.silu(gate) * up
    got = kernels.silu_mul(gate, up)
    assert got.shape == want.shape and got.is_contiguous()
    # The GPU's fast exponential may round SiLU differently in the last bit now and then.
    assert torch.allclose(got.float(), want.float(), rtol=(2 if BF16_EXACT else 4) * torch.finfo(dtype).eps, atol=1e-6)


def test_kv_write_is_the_indexed_assignment():
    g = torch.Generator().manual_seed(3)
    keys = torch.randn(4, 2, 16, 8, generator=g).to(DEV, torch.bfloat16)
    values = torch.randn(4, 2, 16, 8, generator=g).to(DEV, torch.bfloat16)
    qkv = torch.randn(1, 5, 3 * 2 * 8, generator=g).to(DEV, torch.bfloat16)
    key = qkv[0, :, 16:32].view(5, 2, 8)    # strided rows, as the fused projection hands them out
    value = qkv[0, :, 32:].view(5, 2, 8)
    slots = torch.tensor([0, 2, 2, 3, 3], device=DEV)
    positions = torch.tensor([5, 0, 1, 15, 15], device=DEV)   # a repeated (slot, position): the same row twice
    key[4], value[4] = key[3], value[3]
    want_k, want_v = keys.clone(), values.clone()
    want_k[slots, :, positions] = key
    want_v[slots, :, positions] = value
    assert kernels.kv_write_fits(keys, values, key, value)
    kernels.kv_write(keys, values, key, value, slots, positions)
    assert torch.equal(keys, want_k) and torch.equal(values, want_v)


def _softmax_reference(s, mask, scale, dtype):
    s = s * scale
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s, dim=-1).to(dtype)


@pytest.mark.parametrize("block", [4096, 16])   # one pass over a row; or blocks of 16 keys, two passes (online)
@pytest.mark.parametrize("masked", [True, False])
def test_masked_softmax_matches_pytorch(monkeypatch, block, masked):
    monkeypatch.setattr(kernels, "SOFTMAX_BLOCK", block)
    g = torch.Generator().manual_seed(4)
    b, h, rows, n = 3, 2, 2, 40
    s = (torch.randn(b, h, rows, n, generator=g) * 5).to(DEV)
    lengths = torch.tensor([[1, 2], [40, 17], [33, 33]], device=DEV)   # every row sees a key; one sees them all
    mask = (torch.arange(n, device=DEV) < lengths[..., None])[:, None] if masked else None
    want = _softmax_reference(s, mask, 0.125, torch.bfloat16)
    assert kernels.softmax_fits(s, mask)
    got = kernels.masked_softmax(s, mask, 0.125, torch.bfloat16)
    assert got.dtype == torch.bfloat16 and got.shape == want.shape
    if masked:
        assert not got[~mask.expand_as(s)].any()   # masked keys: exactly 0
    assert torch.allclose(got.float(), want.float(), rtol=1e-2, atol=1e-3)


def test_masked_softmax_takes_a_mask_broadcast_over_query_rows():
    """The CUDA-graph step's mask for `queries` rows per slot is an expanded view (stride 0 along the rows)."""
    g = torch.Generator().manual_seed(5)
    s = torch.randn(2, 4, 6, 24, generator=g).to(DEV)
    mask = (torch.arange(24, device=DEV) < torch.tensor([5, 24], device=DEV)[:, None])[:, None, None, :]
    mask = mask.expand(2, 1, 6, 24)
    got = kernels.masked_softmax(s, mask, 0.5, torch.float32)
    assert torch.allclose(got, _softmax_reference(s, mask, 0.5, torch.float32), atol=1e-6)


def _tiny_llama(path, dtype=torch.float32):
    """The tests' noisy tiny Llama (the shared fixture's directory) on DEV."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).to(DEV).eval()
    torch.manual_seed(0)
    with torch.no_grad():   # norms that are not all ones, so that a formula with another weight use would show
        for m in model.modules():
            if type(m).__name__.endswith("RMSNorm"):
                m.weight.uniform_(0.5, 1.5)
    return model


def test_install_replaces_norms_and_mlps_that_compute_the_same(noisy_llama_dir):
    model = _tiny_llama(noisy_llama_dir)
    ids = torch.tensor([[1, 5, 9, 2, 7, 3]], device=DEV)
    with torch.no_grad():
        want = model(ids).logits
    counts = kernels.install(model)
    assert counts == {"rms_norm": 2 * 2 + 1, "mlp": 2}
    assert model.model.norm.forward.__func__ is kernels._rms_forward
    with torch.no_grad():
        got = model(ids).logits
    assert torch.allclose(got, want, atol=1e-5)


def test_install_leaves_a_norm_that_computes_something_else_alone():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    class OffsetRMSNorm(LlamaRMSNorm):   # Gemma-style: scales by 1 + weight
        def forward(self, x):
            h = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
            return (h * (1.0 + self.weight.float())).to(x.dtype)

    model = torch.nn.Sequential(OffsetRMSNorm(16).to(DEV))
    assert kernels.install(model) == {"rms_norm": 0, "mlp": 0}
    assert "forward" not in model[0].__dict__


def test_token_major_rope_with_kernels_gives_the_same_logits(monkeypatch, noisy_llama_dir):
    import sys

    from sprint.backends import rope

    model = _tiny_llama(noisy_llama_dir, torch.bfloat16 if BF16_EXACT else torch.float32)
    module = sys.modules[type(model).__module__]
    # Both restored after the test: the modeling module's function and the kernels it rotates with.
    monkeypatch.setattr(module, "apply_rotary_pos_emb", module.apply_rotary_pos_emb)
    monkeypatch.setattr(rope, "_KERNELS", None)
    ids = torch.tensor([[1, 5, 9, 2, 7, 3, 4]], device=DEV)
    with torch.no_grad():
        want = model(ids).logits
    assert rope.install_token_major_rope(model, kernels)
    assert rope._KERNELS is kernels
    calls, rotary = [], kernels.rotary
    monkeypatch.setattr(kernels, "rotary", lambda *a: calls.append(1) or rotary(*a))
    with torch.no_grad():
        got = model(ids).logits
    assert len(calls) == model.config.num_hidden_layers   # the model's attention did rotate through the kernel
    assert torch.equal(got, want)
    assert rope.install_token_major_rope(model)   # installed already: the same function, now without kernels
    assert rope._KERNELS is None


def _attention_reference(q, k, v, mask, scale):
    s = (q.float() @ k.float().transpose(-1, -2)) * scale
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return torch.softmax(s, dim=-1).to(v.dtype).float() @ v.float()


# Triton's interpreter multiplies bfloat16 matrices wrongly (it stores them as 16-bit integers): bfloat16 on a GPU only.
ATTENTION_DTYPES = [torch.float32, torch.bfloat16] if CUDA else [torch.float32]


@pytest.mark.parametrize("dtype", ATTENTION_DTYPES)
@pytest.mark.parametrize("rows,keys,masked", [(1, 40, True), (3, 300, True), (8, 1000, False), (1, 64, False)])
def test_split_attention_matches_the_matrix_products(monkeypatch, rows, keys, masked, dtype):
    """Decode attention split over the keys (flash decoding) against the plain computation: slots of the cache as
    strided views (more positions than attended), per-row key lengths, several splits and blocks per split."""
    monkeypatch.setattr(kernels, "ATTENTION_PROGRAMS", 16)   # several splits even for these small shapes
    g = torch.Generator().manual_seed(6)
    b, h, d, cap = 3, 2, 16, 1024
    cache_k = torch.randn(4, h, cap, d, generator=g).to(DEV, dtype)
    cache_v = torch.randn(4, h, cap, d, generator=g).to(DEV, dtype)
    k, v = cache_k[:b, :, :keys], cache_v[:b, :, :keys]   # views: slot stride cap * d
    q = torch.randn(b, h, rows, d, generator=g).to(DEV, dtype)
    mask = None
    if masked:
        lengths = torch.tensor([1, keys // 2, keys], device=DEV)
        mask = (torch.arange(keys, device=DEV) < lengths[:, None])[:, None, None, :].expand(b, 1, rows, keys)
    assert kernels.attention_fits(q, k, v, mask)
    got = kernels.attention(q, k, v, mask, 0.25)
    want = _attention_reference(q, k, v, mask, 0.25)
    assert got.dtype == dtype and got.shape == want.shape
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    assert torch.allclose(got.float(), want, atol=tol, rtol=tol)


@pytest.mark.parametrize("dtype", ATTENTION_DTYPES)
def test_split_attention_reads_a_shared_prefix_from_its_source_slot(monkeypatch, dtype):
    """Slots whose first keys are a copy of another slot's (a SPRINT stage's executors and their planner) read them
    from that slot: the answer is the attention over the true keys. Proven by leaving the copies out (the slots hold
    noise there); the source may lie beyond the slots of the call (a finished sequence's slot)."""
    monkeypatch.setattr(kernels, "ATTENTION_PROGRAMS", 16)
    monkeypatch.setattr(kernels, "ATTENTION_BLOCK_N", 32)   # whole shared blocks in both sharing slots
    g = torch.Generator().manual_seed(7)
    b, h, d, cap, keys = 3, 2, 16, 512, 300
    cache_k = torch.randn(5, h, cap, d, generator=g).to(DEV, dtype)
    cache_v = torch.randn(5, h, cap, d, generator=g).to(DEV, dtype)
    # Slot 0 shares nothing, slot 1 its first 37 keys with slot 0, slot 2 its first 130 with slot 4 (outside the
    # call's 3 slots).
    src = torch.tensor([0, 0, 4], device=DEV, dtype=torch.int32)
    length = torch.tensor([0, 37, 130], device=DEV, dtype=torch.int32)
    true_k, true_v = cache_k.clone(), cache_v.clone()
    true_k[1, :, :37], true_v[1, :, :37] = cache_k[0, :, :37], cache_v[0, :, :37]
    true_k[2, :, :130], true_v[2, :, :130] = cache_k[4, :, :130], cache_v[4, :, :130]
    # Whole blocks of shared keys come from the source; the block reaching past them from the slot's own copy.
    for slot, n in ((1, 37), (2, 130)):
        whole = n // kernels.ATTENTION_BLOCK_N * kernels.ATTENTION_BLOCK_N
        cache_k[slot, :, whole:n], cache_v[slot, :, whole:n] = true_k[slot, :, whole:n], true_v[slot, :, whole:n]
    q = torch.randn(b, h, 1, d, generator=g).to(DEV, dtype)
    lengths = torch.tensor([keys, 200, 150], device=DEV)
    mask = (torch.arange(keys, device=DEV) < lengths[:, None])[:, None, None, :]
    got = kernels.attention(q, cache_k[:b, :, :keys], cache_v[:b, :, :keys], mask, 0.25, (src, length))
    want = _attention_reference(q, true_k[:b, :, :keys], true_v[:b, :, :keys], mask, 0.25)
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    assert torch.allclose(got.float(), want, atol=tol, rtol=tol)
    # Without the sharing the same call reads each slot's own (noise) keys: a different answer.
    plain = kernels.attention(q, cache_k[:b, :, :keys], cache_v[:b, :, :keys], mask, 0.25)
    assert not torch.allclose(plain.float(), want, atol=tol, rtol=tol)


def test_split_attention_leaves_many_slots_times_keys_and_long_prefills_to_the_matrix_products():
    q = torch.zeros(8, 4, 1, 64, device=DEV)
    k = torch.zeros(8, 4, 2048, 64, device=DEV)
    assert kernels.attention_fits(q, k, k, None)
    k = torch.zeros(8, 4, 4096, 64, device=DEV)   # 8 x 4,096 > ATTENTION_MAX_SLOT_KEYS
    assert not kernels.attention_fits(q, k, k, None)
    q = torch.zeros(1, 4, 128, 64, device=DEV)    # a long prefill's rows
    assert not kernels.attention_fits(q, k[:1], k[:1], None)


def test_split_attention_that_cannot_run_falls_back_to_the_matrix_products(monkeypatch, caplog):
    """A split attention that fails to compile or launch (a shape beyond the GPU's resources) is reported once and
    decode_attention computes the same thing with matrix products from then on."""
    from sprint.backends.decode_attention import decode_attention

    def broken(*args, **kwargs):
        raise RuntimeError("out of resources")

    monkeypatch.setattr(kernels, "_attention", broken)
    monkeypatch.setattr(kernels, "_ATTENTION_FAILED", False)
    g = torch.Generator().manual_seed(7)
    q = torch.randn(2, 2, 1, 16, generator=g).to(DEV)
    k, v = torch.randn(2, 2, 40, 16, generator=g).to(DEV), torch.randn(2, 2, 40, 16, generator=g).to(DEV)
    assert kernels.attention_fits(q, k, v, None)
    out = decode_attention(q, k, v, None, 0.25, kernels)
    assert torch.allclose(out, _attention_reference(q, k, v, None, 0.25), atol=1e-5)
    assert kernels._ATTENTION_FAILED and not kernels.attention_fits(q, k, v, None)
    assert any("split decode attention unavailable" in r.getMessage() for r in caplog.records)


def test_install_leaves_a_module_that_fails_on_the_check_input_alone():
    class PickyMLP(torch.nn.Module):   # gate/up/down like Llama's, but only for [batch, tokens, hidden] inputs
        def __init__(self):
            super().__init__()
            self.gate_proj, self.up_proj = torch.nn.Linear(8, 16), torch.nn.Linear(8, 16)
            self.down_proj, self.act_fn = torch.nn.Linear(16, 8), torch.nn.SiLU()

        def forward(self, x):
            assert x.dim() == 3
            return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))

    model = torch.nn.Sequential(PickyMLP().to(DEV))
    assert kernels.install(model) == {"rms_norm": 0, "mlp": 0}
    assert "forward" not in model[0].__dict__


@pytest.mark.parametrize("rows,one_row", [(1, False), (1, True), (2, False)])
@pytest.mark.parametrize("dtype", ATTENTION_DTYPES)
def test_split_attention_over_a_stages_layout(monkeypatch, rows, one_row, dtype):
    """A SPRINT stage's layout: slot 0 (the planner) shares nothing, slots 1-3 copied its first keys (executors,
    each a different length, two ending inside a block), slot 4 copied a slot outside the call, slot 5 shares
    nothing. The attention is the one over the true keys, with and without the one-row path: whole shared blocks
    are read from the source (the copies' whole blocks hold noise here), the block reaching past a copy's end from
    the slot itself."""
    monkeypatch.setattr(kernels, "ATTENTION_PROGRAMS", 32)
    monkeypatch.setattr(kernels, "ATTENTION_BLOCK_N", 32)
    if one_row:   # a step large enough for the one-row path
        monkeypatch.setattr(kernels, "ATTENTION_ONE_ROW_MIN_SLOT_KEYS", 0)
    g = torch.Generator().manual_seed(8)
    b, h, d, cap, keys = 6, 2, 16, 512, 300
    cache_k = torch.randn(8, h, cap, d, generator=g).to(DEV, dtype)
    cache_v = torch.randn(8, h, cap, d, generator=g).to(DEV, dtype)
    src = torch.tensor([0, 0, 0, 0, 7, 5], device=DEV, dtype=torch.int32)
    length = torch.tensor([0, 64, 100, 190, 70, 0], device=DEV, dtype=torch.int32)
    true_k, true_v = cache_k.clone(), cache_v.clone()
    for slot in range(1, 5):
        n, root = int(length[slot]), int(src[slot])
        true_k[slot, :, :n], true_v[slot, :, :n] = cache_k[root, :, :n], cache_v[root, :, :n]
    for slot in range(1, 5):   # each copy holds noise but in the block that reaches past it
        n = int(length[slot])
        whole = n // 32 * 32
        cache_k[slot, :, whole:n], cache_v[slot, :, whole:n] = true_k[slot, :, whole:n], true_v[slot, :, whole:n]
    q = torch.randn(b, h, rows, d, generator=g).to(DEV, dtype)
    lengths = torch.tensor([260, 120, 150, 300, 200, 90], device=DEV)
    mask = (torch.arange(keys, device=DEV) < lengths[:, None])[:, None, None, :].expand(b, 1, rows, keys)
    want = _attention_reference(q, true_k[:b, :, :keys], true_v[:b, :, :keys], mask, 0.25)
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    got = kernels.attention(q, cache_k[:b, :, :keys], cache_v[:b, :, :keys], mask, 0.25, (src, length))
    assert torch.allclose(got.float(), want, atol=tol, rtol=tol)
