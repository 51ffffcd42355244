"""fuse_projections: a model with its q/k/v and gate/up projections fused computes what it computed before."""

import pytest

torch = pytest.importorskip("torch")

from sprint.backends.fuse import fuse_projections  # noqa: E402


def _model(noisy_llama_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(noisy_llama_dir), dtype=torch.float32).eval()


def test_fused_model_gives_the_same_logits_with_fewer_products(noisy_llama_dir):
    plain, fused = _model(noisy_llama_dir), _model(noisy_llama_dir)
    layers = fused.config.num_hidden_layers
    assert fuse_projections(fused) == 2 * layers
    ids = torch.tensor([[5, 17, 42, 7, 99, 3, 64, 12]])
    counts = {}
    for name, model in (("plain", plain), ("fused", fused)):
        calls = []
        original = torch.nn.functional.linear

        def counting(*a, _o=original, _c=calls, **k):
            _c.append(1)
            return _o(*a, **k)

        torch.nn.functional.linear = counting
        try:
            with torch.no_grad():
                out = model(input_ids=ids).logits
        finally:
            torch.nn.functional.linear = original
        counts[name] = (len(calls), out)
    torch.testing.assert_close(counts["fused"][1], counts["plain"][1], rtol=1e-5, atol=1e-5)
    assert counts["plain"][0] - counts["fused"][0] == 3 * layers   # 7 -> 4 products per layer


def test_fused_weights_are_views_not_copies(noisy_llama_dir):
    model = _model(noisy_llama_dir)
    fuse_projections(model)
    attn = model.model.layers[0].self_attn
    q, k = attn.q_proj.weight, attn.k_proj.weight
    assert q.untyped_storage().data_ptr() == k.untyped_storage().data_ptr()
    assert not q.requires_grad


def test_groups_that_differ_are_left_alone(noisy_llama_dir):
    model = _model(noisy_llama_dir)
    mlp = model.model.layers[0].mlp
    mlp.up_proj = torch.nn.Linear(mlp.up_proj.in_features, mlp.up_proj.out_features, bias=True)
    assert fuse_projections(model) == 2 * model.config.num_hidden_layers - 1


def test_contiguous_splits_give_the_same_logits(noisy_llama_dir, monkeypatch):
    """CONTIGUOUS_SPLITS (each sibling's slice copied out, the default) changes layout only, and the slices are
    contiguous with several rows; `contiguous=False` (what the fused kernels ask for) hands out the slices."""
    from sprint.backends import fuse

    monkeypatch.setattr(fuse, "CONTIGUOUS_SPLITS", True)
    plain, fused, sliced = _model(noisy_llama_dir), _model(noisy_llama_dir), _model(noisy_llama_dir)
    fuse_projections(fused)
    fuse_projections(sliced, contiguous=False)
    ids = torch.tensor([[5, 17, 42, 7, 99, 3, 64, 12]])
    with torch.no_grad():
        torch.testing.assert_close(fused(input_ids=ids).logits, plain(input_ids=ids).logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(sliced(input_ids=ids).logits, plain(input_ids=ids).logits, rtol=1e-5, atol=1e-5)
        x = torch.randn(1, 8, fused.config.hidden_size)
        layer = fused.model.layers[0]
        assert all(p(x).is_contiguous() for p in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.mlp.up_proj))
        assert not sliced.model.layers[0].self_attn.k_proj(x).is_contiguous()
