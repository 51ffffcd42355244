"""Executor branches on a CUDA GPU: training steps with flex attention's block mask (compiled there) give the loss and
gradients of the dense mask, and both give the logits of the separate records.

Skipped without a GPU (CI has none); run on a GPU machine with `python -m pytest -q -m gpu`.
"""

from __future__ import annotations

import functools

import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu, pytest.mark.integration,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def merged_batch(tmp_path_factory):
    from sprint.testing.tiny import build_tiny_countdown, build_tiny_llama
    from sprint.train.branches import BranchCollator, merge_branches
    from sprint.train.data import encode_columns, read_records

    d = tmp_path_factory.mktemp("cdgpu")
    tok = build_tiny_countdown(d)
    build_tiny_llama(d / "model", tok, hidden_size=64, layers=2, heads=4, kv_heads=2, intermediate_size=128,
                     max_position_embeddings=8192, initializer_range=0.3)
    merged = merge_branches(encode_columns(read_records(d / "sprint_train.jsonl", "sprint"), tok, progress=False))
    feats = []
    for s in range(len(merged.record_ids)):
        lo, hi = int(merged.offsets[s]), int(merged.offsets[s + 1])
        f = {k: getattr(merged, k)[lo:hi].tolist() for k in ("labels", "position_ids", "seg_start", "ctx_end")}
        f["input_ids"] = merged.ids[lo:hi].tolist()
        feats.append(f)
    return d, BranchCollator(tok.pad_token_id)(feats)


def _step(model_dir, batch, attention):
    from transformers import AutoModelForCausalLM

    from sprint.train.branches import tree_attention_hook

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation=attention).cuda()
    model.train()
    model.register_forward_pre_hook(functools.partial(tree_attention_hook, flex=attention == "flex_attention"),
                                    with_kwargs=True)
    out = model(**{k: v.cuda() for k, v in batch.items()})
    out.loss.backward()
    return out.loss.item(), torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def test_flex_training_step_matches_the_dense_mask(merged_batch):
    d, batch = merged_batch
    dense_loss, dense_grad = _step(d / "model", batch, "sdpa")
    flex_loss, flex_grad = _step(d / "model", batch, "flex_attention")
    assert flex_loss == pytest.approx(dense_loss, rel=1e-3)
    # Kernels differ in summation order (and TF32 may be on): compare the whole gradient, not each entry.
    assert ((flex_grad - dense_grad).norm() / dense_grad.norm()).item() < 1e-2
