"""Executor branches (`sprint.train.branches`): a merged sequence computes every token exactly as its separate record
does, on real Countdown records and a real (tiny, random) Llama."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

# Importing flex attention goes through torch.jit code that warns about its own deprecation (torch's, not ours).
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")


def _countdown(tmp_path_factory, own_tokenizer: bool):
    """A small Countdown data build (every executor record kept), a tokenizer and a tiny random Llama. The data's own
    tokenizer has every tag as one token; the other is a BPE trained on the records that splits tags into pieces,
    like a general-purpose tokenizer would."""
    import json

    from sprint.testing.tiny import build_tiny_countdown, build_tiny_llama, build_tiny_tokenizer

    d = tmp_path_factory.mktemp("cd")
    tok = build_tiny_countdown(d)
    if not own_tokenizer:
        corpus = [m["content"] for line in (d / "sprint_train.jsonl").read_text().splitlines()
                  for m in json.loads(line)["messages"]]
        tok = build_tiny_tokenizer(d / "bpe", corpus=corpus, vocab_size=600, tags_as_tokens=False)
    model = build_tiny_llama(d / "model", tok, hidden_size=32, layers=2, heads=4, kv_heads=2, intermediate_size=64,
                             max_position_embeddings=8192, initializer_range=0.3).eval()
    return d, tok, model


@pytest.fixture(scope="module")
def countdown(tmp_path_factory):
    return _countdown(tmp_path_factory, True)


@pytest.fixture(scope="module", params=[True, False], ids=["tag-tokens", "bpe-pieces"])
def any_tokenizer(request, tmp_path_factory):
    return _countdown(tmp_path_factory, request.param)


def _columns(d, tok):
    from sprint.train.data import encode_columns, read_records

    return encode_columns(read_records(d / "sprint_train.jsonl", "sprint"), tok, progress=False)


def test_branches_see_exactly_their_executor_context(any_tokenizer):
    import numpy as np

    from sprint.train.branches import merge_branches

    d, tok, _ = any_tokenizer
    cols = _columns(d, tok)
    merged = merge_branches(cols)
    planners = [i for i, r in enumerate(cols.roles) if r != "executor"]
    assert merged.record_ids == [cols.record_ids[i] for i in planners]
    assert int(merged.branches.sum()) == sum(r == "executor" for r in cols.roles) > len(planners)
    # Fewer tokens than the separate records: the executors' shared context is not repeated.
    assert merged.offsets[-1] < cols.offsets[-1]
    # Each branch's visible tokens, in order, are its executor record's tokens, at their positions.
    by_id = {rid: i for i, rid in enumerate(cols.record_ids)}
    for s, rid in enumerate(merged.record_ids):
        lo, hi = int(merged.offsets[s]), int(merged.offsets[s + 1])
        ids, seg, ctx, pos = (a[lo:hi] for a in (merged.ids, merged.seg_start, merged.ctx_end, merged.position_ids))
        execs = [r for r in cols.record_ids if r.startswith(rid + "#exec-")]
        starts = sorted(set(seg[seg > 0].tolist()))
        assert len(starts) == len(execs)
        for start, eid in zip(starts, execs):
            e = by_id[eid]
            want = cols.ids[cols.offsets[e]:cols.offsets[e + 1]]
            last = int(np.flatnonzero(seg == start)[-1])
            visible = [k for k in range(last + 1) if k >= start or k < ctx[last]]
            assert ids[visible].tolist() == want.tolist(), eid
            assert pos[start:last + 1].tolist() == list(range(ctx[last], ctx[last] + last + 1 - start))
            want_labels = cols.labels[cols.offsets[e]:cols.offsets[e + 1]][ctx[last]:]
            assert merged.labels[lo + start:lo + last + 1].tolist() == want_labels.tolist()
        # The planner's part is its record unchanged.
        p = by_id[rid]
        n = int(cols.offsets[p + 1] - cols.offsets[p])
        assert ids[:n].tolist() == cols.ids[cols.offsets[p]:cols.offsets[p + 1]].tolist()
        assert (seg[:n] == 0).all() and (ctx[:n] == 0).all()


@pytest.mark.parametrize("attention", ["sdpa", "flex_attention"])
def test_merged_logits_match_the_separate_records(any_tokenizer, attention):
    """The property the training relies on: one forward pass over a padded batch of merged sequences gives every
    token the logits its own record gives it (planner and executors), to float rounding, whether or not the
    tokenizer has the tags as single tokens, with the dense mask and with flex attention's block mask."""
    import functools

    from transformers import AutoModelForCausalLM

    from sprint.train.branches import BranchCollator, merge_branches, tree_attention_hook

    d, tok, _ = any_tokenizer
    model = AutoModelForCausalLM.from_pretrained(d / "model", dtype=torch.float32, attn_implementation=attention).eval()
    hook = functools.partial(tree_attention_hook, flex=attention == "flex_attention")
    # The separate records run on the same weights with plain causal SDPA (flex's own causal path compiles, which
    # needs a C++ toolchain on a CPU; our block mask runs in eager mode).
    alone_model = AutoModelForCausalLM.from_pretrained(d / "model", dtype=torch.float32).eval()
    cols = _columns(d, tok)
    merged = merge_branches(cols)
    feats = []
    for s in range(len(merged.record_ids)):
        lo, hi = int(merged.offsets[s]), int(merged.offsets[s + 1])
        feats.append({k: getattr(merged, k)[lo:hi].tolist()
                      for k in ("ids", "labels", "position_ids", "seg_start", "ctx_end")})
        feats[-1]["input_ids"] = feats[-1].pop("ids")
    batch = BranchCollator(tok.pad_token_id)(feats)
    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            out = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    finally:
        handle.remove()
    by_id = {rid: i for i, rid in enumerate(cols.record_ids)}
    worst, compared = 0.0, 0
    for s, rid in enumerate(merged.record_ids):
        lo = int(merged.offsets[s])
        seg = merged.seg_start[lo:int(merged.offsets[s + 1])]
        ctx = merged.ctx_end[lo:int(merged.offsets[s + 1])]
        p = by_id[rid]
        n = int(cols.offsets[p + 1] - cols.offsets[p])
        with torch.no_grad():
            alone = alone_model(input_ids=torch.tensor([cols.ids[cols.offsets[p]:cols.offsets[p + 1]].tolist()])).logits[0]
        worst = max(worst, (alone - out[s, :n]).abs().max().item())
        execs = [r for r in cols.record_ids if r.startswith(rid + "#exec-")]
        for start, eid in zip(sorted(set(seg[seg > 0].tolist())), execs):
            e = by_id[eid]
            e_ids = cols.ids[cols.offsets[e]:cols.offsets[e + 1]].tolist()
            shared = int(ctx[start])
            with torch.no_grad():
                alone = alone_model(input_ids=torch.tensor([e_ids])).logits[0]
            worst = max(worst, (alone[shared:] - out[s, start:start + len(e_ids) - shared]).abs().max().item())
            compared += 1
    assert compared > 10
    assert worst < 1e-4, worst


def test_branches_keep_each_records_answer_mask(any_tokenizer):
    """With the answer weight on, the planner's part keeps its record's answer mask and each branch its executor
    record's, so every weighted loss token of the separate records is weighted once in the merged sequences."""
    import numpy as np

    from sprint.train.branches import merge_branches
    from sprint.train.data import encode_columns, read_records

    d, tok, _ = any_tokenizer
    cols = encode_columns(read_records(d / "sprint_train.jsonl", "sprint"), tok, progress=False, answer_spans=True,
                          answer_pattern=r"Solution (\S+)")
    merged = merge_branches(cols)
    assert merged.answer_mask is not None and merged.answer_mask.dtype == np.uint8
    assert len(merged.answer_mask) == len(merged.ids)
    by_id = {rid: i for i, rid in enumerate(cols.record_ids)}
    for s, rid in enumerate(merged.record_ids):
        lo, hi = int(merged.offsets[s]), int(merged.offsets[s + 1])
        seg, ctx, mask = merged.seg_start[lo:hi], merged.ctx_end[lo:hi], merged.answer_mask[lo:hi]
        p = by_id[rid]
        n = int(cols.offsets[p + 1] - cols.offsets[p])
        assert mask[:n].tolist() == cols.answer_mask[cols.offsets[p]:cols.offsets[p + 1]].tolist()
        execs = [r for r in cols.record_ids if r.startswith(rid + "#exec-")]
        for start, eid in zip(sorted(set(seg[seg > 0].tolist())), execs):
            e = by_id[eid]
            want = cols.answer_mask[cols.offsets[e] + int(ctx[start]):cols.offsets[e + 1]]
            assert mask[start:start + len(want)].tolist() == want.tolist(), eid
    weighted_loss_tokens = lambda c: int(((c.answer_mask == 1) & (c.labels != -100)).sum())
    assert weighted_loss_tokens(merged) == weighted_loss_tokens(cols) > 0
    assert merge_branches(_columns(d, tok)).answer_mask is None  # no weight, no column


def test_orphan_executor_record_is_an_error(countdown):
    from sprint.train.branches import merge_branches

    d, tok, _ = countdown
    cols = _columns(d, tok)
    keep = [r != cols.record_ids[0] for r in cols.record_ids]  # drop the first planner record only
    with pytest.raises(ValueError, match="has no planner record"):
        merge_branches(cols.select(keep))


@pytest.mark.integration
def test_training_with_branches_counts_merged_tokens_and_learns(countdown, tmp_path):
    """`sprint train` with data.executor_branches: the batches carry the mask columns, the budget counts the merged
    sequences' real tokens, and the loss on an executor's completion goes down."""
    from sprint.train.config import load_config
    from sprint.train.data import encode_records, read_records
    from sprint.train.trainer import build_trainer, train
    from transformers import AutoModelForCausalLM

    d, tok, _ = countdown
    common = [f"data.train={d / 'sprint_train.jsonl'}", f"data.eval={d / 'sprint_val.jsonl'}", "data.format=sprint",
              f"model.name_or_path={d / 'model'}", "training.logging_steps=1", "training.report_to=none",
              "training.per_device_train_batch_size=2", "training.learning_rate=3e-2", "training.eval_steps=100"]
    cfg = load_config(None, common + ["data.executor_branches=true", f"training.output_dir={tmp_path / 'b'}",
                                      "training.max_steps=12"])
    trainer, data = build_trainer(cfg, progress=False)
    batch = next(iter(trainer.get_train_dataloader()))
    assert {"seg_start", "ctx_end", "position_ids", "attention_mask"} <= set(batch)
    assert batch["attention_mask"].dim() == 2 and (batch["seg_start"] > 0).any()
    plain = load_config(None, common + [f"training.output_dir={tmp_path / 'p'}"])
    _, separate = build_trainer(plain, progress=False)
    assert len(data.train) < len(separate.train) and data.train_stats.total_tokens < separate.train_stats.total_tokens

    import sprint.train.branches as branches

    masks = []
    real = branches.tree_mask
    branches.tree_mask = lambda *a: masks.append(1) or real(*a)  # the training steps really build the tree mask
    try:
        result = train(cfg, progress=False, log=lambda s: None)
    finally:
        branches.tree_mask = real
    assert len(masks) >= 12
    m = result.metrics
    assert m["global_step"] == 12
    assert 0 < m["num_input_tokens_seen"] <= 12 * 2 * data.train_stats.max   # real tokens, not T x T mask entries
    (row,) = [r for r in encode_records(read_records(d / "sprint_train.jsonl", "sprint"), tok, progress=False)
              if r["role"] == "executor"][:1]

    def loss(model):
        ids = torch.tensor([row["input_ids"]])
        labels = torch.tensor([[t if c else -100 for t, c in zip(row["input_ids"], row["completion_mask"])]])
        with torch.no_grad():
            return model(input_ids=ids, labels=labels).loss.item()

    before = AutoModelForCausalLM.from_pretrained(d / "model")
    after = AutoModelForCausalLM.from_pretrained(result.output_dir)
    assert loss(after) < 0.8 * loss(before)
    with pytest.raises(ValueError, match="executor_branches"):
        build_trainer(load_config(None, common + ["data.executor_branches=true", "data.on_overflow=truncate",
                                                  f"training.output_dir={tmp_path / 't'}"]), progress=False)


@pytest.mark.integration
def test_lora_training_steps_use_the_tree_mask(countdown, tmp_path):
    """With LoRA the trainer calls a PEFT wrapper around the model; its training step builds the tree mask too."""
    import sprint.train.branches as branches
    from sprint.train.config import load_config
    from sprint.train.trainer import build_trainer

    d, tok, _ = countdown
    cfg = load_config(None, [f"data.train={d / 'sprint_train.jsonl'}", "data.format=sprint",
                             f"model.name_or_path={d / 'model'}", "data.executor_branches=true", "lora.enabled=true",
                             "lora.r=4", "lora.alpha=8", "lora.target_modules=q_proj,v_proj", "training.report_to=none",
                             "training.per_device_train_batch_size=2", f"training.output_dir={tmp_path / 'o'}"])
    trainer, _ = build_trainer(cfg, progress=False)
    batch = next(iter(trainer.get_train_dataloader()))
    masks = []
    real = branches.tree_mask
    branches.tree_mask = lambda *a: masks.append(a[0].shape) or real(*a)
    try:
        loss = trainer.compute_loss(trainer.model, batch)
    finally:
        branches.tree_mask = real
    assert masks == [batch["attention_mask"].shape] and torch.isfinite(loss)
