"""install_token_major_rope: the model's modeling module computes rotary embeddings on token-major views, with exactly
the same results, and a module whose function computes something else is left alone."""

import sys
import types

import pytest

torch = pytest.importorskip("torch")

from sprint.backends.rope import install_token_major_rope  # noqa: E402


def _model(noisy_llama_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(noisy_llama_dir), dtype=torch.float32).eval()


def test_token_major_rope_gives_bit_identical_logits(noisy_llama_dir, monkeypatch):
    model = _model(noisy_llama_dir)
    module = sys.modules[type(model).__module__]
    original = module.apply_rotary_pos_emb
    monkeypatch.setattr(module, "apply_rotary_pos_emb", original)   # restored after the test
    ids = torch.tensor([[5, 17, 42, 7, 99, 3, 64, 12]])
    with torch.no_grad():
        before = model(input_ids=ids).logits
    assert install_token_major_rope(model)
    assert module.apply_rotary_pos_emb is not original and module.apply_rotary_pos_emb.__wrapped__ is original
    assert install_token_major_rope(model)   # twice: installed once
    assert module.apply_rotary_pos_emb.__wrapped__ is original
    with torch.no_grad():
        after = model(input_ids=ids).logits
    assert torch.equal(before, after)
    # The rotated views come back in the layout attention code expects: [batch, heads, tokens, head_dim].
    q = torch.randn(1, 8, 4 * 16).view(1, 8, 4, 16).transpose(1, 2)
    k = torch.randn(1, 8, 2 * 16).view(1, 8, 2, 16).transpose(1, 2)
    cos, sin = torch.randn(1, 8, 16), torch.randn(1, 8, 16)
    qe, ke = module.apply_rotary_pos_emb(q, k, cos, sin)
    assert qe.shape == (1, 4, 8, 16) and ke.shape == (1, 2, 8, 16)
    assert qe.transpose(1, 2).is_contiguous()
    # Other call shapes go to the original function.
    qe2, _ = module.apply_rotary_pos_emb(q.transpose(1, 2), k.transpose(1, 2), cos, sin, unsqueeze_dim=2)
    want, _ = original(q.transpose(1, 2), k.transpose(1, 2), cos, sin, unsqueeze_dim=2)
    assert torch.equal(qe2, want)


def test_a_different_rotary_function_is_left_alone(monkeypatch):
    """A module whose apply_rotary_pos_emb differs (here: rotates only half of each head, as partial-rotary models
    do) keeps its own; a module without one is refused."""
    def rotate_half(x):
        x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
        return torch.cat((-x2, x1), dim=-1)

    def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
        cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
        half = q.shape[-1] // 2
        qr = torch.cat([q[..., :half] * cos[..., :half] + rotate_half(q[..., :half]) * sin[..., :half],
                        q[..., half:]], dim=-1)
        kr = torch.cat([k[..., :half] * cos[..., :half] + rotate_half(k[..., :half]) * sin[..., :half],
                        k[..., half:]], dim=-1)
        return qr, kr

    fake = types.ModuleType("fake_modeling")
    fake.apply_rotary_pos_emb, fake.rotate_half = apply_rotary_pos_emb, rotate_half
    monkeypatch.setitem(sys.modules, "fake_modeling", fake)
    Model = type("Model", (), {"__module__": "fake_modeling"})
    assert not install_token_major_rope(Model())
    assert fake.apply_rotary_pos_emb is apply_rotary_pos_emb
    bare = types.ModuleType("bare_modeling")
    monkeypatch.setitem(sys.modules, "bare_modeling", bare)
    assert not install_token_major_rope(type("M", (), {"__module__": "bare_modeling"})())
