"""`data.answer_loss_weight` (`sprint.train.weights`): the answer span of real Countdown records, the weighted loss
against a hand computation on a tiny random Llama, config validation and a short `sprint train` run (CPU)."""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")

from sprint.train.config import load_config  # noqa: E402
from sprint.train.data import TrainRecord, encode_columns, read_records  # noqa: E402
from sprint.train.weights import LOSS_WEIGHTS, answer_char_span  # noqa: E402


@pytest.fixture(scope="module")
def countdown(tmp_path_factory):
    """A small Countdown data build (both formats, executor records included), its tokenizer and a tiny Llama."""
    from sprint.testing.tiny import build_tiny_countdown, build_tiny_llama

    d = tmp_path_factory.mktemp("cd")
    tok = build_tiny_countdown(d, train=4, test=1)
    build_tiny_llama(d / "model", tok, hidden_size=32, layers=2, heads=4, kv_heads=2, intermediate_size=64,
                     max_position_embeddings=8192)
    return d


@pytest.fixture(scope="module", params=["countdown", "bpe-pieces"])
def tokenizer(request, countdown):
    """The Countdown tokenizer (tags, digits and words as tokens), or a byte-level BPE trained on the records, whose
    tokens may straddle the answer's edges (a space merged before the backslash)."""
    from transformers import AutoTokenizer

    from sprint.testing.tiny import build_tiny_tokenizer

    if request.param == "countdown":
        return AutoTokenizer.from_pretrained(countdown / "tokenizer")
    corpus = [m["content"] for f in ("sprint_train.jsonl", "sequential_train.jsonl")
              for line in (countdown / f).read_text().splitlines() for m in json.loads(line)["messages"]]
    return build_tiny_tokenizer(countdown / "bpe", corpus=corpus, vocab_size=600, tags_as_tokens=False)


def _cfg(countdown, tmp_path, *overrides):
    return load_config(None, [f"data.train={countdown / '{format}_train.jsonl'}",
                              f"model.name_or_path={countdown / 'model'}", f"training.output_dir={tmp_path / 'out'}",
                              "training.report_to=none", "training.logging_steps=1", *overrides])


def _assert_exact_span(tok, ids, start, end, boxed):
    """Tokens start:end decode to a text holding `boxed`, and neither edge token can go (the token-overlap rule)."""
    assert 0 <= start < end <= len(ids)
    assert boxed in tok.decode(ids[start:end])
    assert boxed not in tok.decode(ids[start + 1:end]) and boxed not in tok.decode(ids[start:end - 1])


# ------------------------------------------------------------------------------------------ span detection
def test_char_span_is_the_last_boxed_with_its_matching_brace():
    text = "a \\boxed{1} b \\boxed{\\frac{1}{2}} c"
    lo, hi = answer_char_span(text)
    assert text[lo:hi] == "\\boxed{\\frac{1}{2}}"
    assert answer_char_span("\\boxed{x}") == (0, 9)
    assert answer_char_span("no answer here {}") is None
    assert answer_char_span("\\boxed{1} then \\boxed{unclosed") is None  # the last one never closes: no span


def test_token_span_takes_every_token_that_overlaps_the_answer():
    from sprint.train.weights import answer_token_span

    text = "x \\boxed{12}\nend"  # the answer is characters 2-12
    pieces = ["x", " \\", "boxed", "{", "1", "2", "}\n", "end"]  # tokens straddle both edges
    offsets, pos = [], 0
    for p in pieces:
        offsets.append((pos, pos + len(p)))
        pos += len(p)
    assert answer_token_span(text, offsets) == (1, 7)
    assert answer_token_span("no answer", [(0, 2), (2, 9)]) is None


def test_answer_tokens_of_countdown_records(countdown, tokenizer):
    for fmt, tail in (("sprint", "\n</Final_answer>\n</think>"), ("sequential", "")):
        records = read_records(countdown / f"{fmt}_train.jsonl", fmt)
        cols = encode_columns(records, tokenizer, progress=False, answer_spans=True)
        assert len(cols.answer_start) == len(cols.answer_end) == len(records)
        for i, rec in enumerate(records):
            lo, hi = int(cols.answer_start[i]), int(cols.answer_end[i])
            if rec.role == "executor":  # an execution has no final answer
                assert "\\boxed{" not in rec.completion[rec.completion_start:] and (lo, hi) == (-1, -1)
                continue
            boxed = rec.completion[slice(*answer_char_span(rec.completion))]
            assert rec.completion.endswith(boxed + tail)  # e.g. \boxed{(47+(91/7))-5}, the record's answer
            assert rec.answer in boxed
            ids = cols.ids[cols.offsets[i]:cols.offsets[i + 1]].tolist()
            assert int(cols.prompt_tokens[i]) <= lo  # in the completion
            _assert_exact_span(tokenizer, ids, lo, hi, boxed)
        assert any(r.role == "executor" for r in records) == (fmt == "sprint")


def test_last_nested_boxed_is_chosen_and_no_boxed_gives_no_span(tokenizer):
    records = [
        TrainRecord(id="two", format="sequential", question="What is half?",
                    completion="<think>\nfirst \\boxed{1} then\n</think>\n\nSo \\boxed{\\frac{1}{2}} it is."),
        TrainRecord(id="none", format="sequential", question="What is half?", completion="<think>\nno idea\n</think>"),
    ]
    cols = encode_columns(records, tokenizer, progress=False, answer_spans=True)
    ids = cols.ids[cols.offsets[0]:cols.offsets[1]].tolist()
    _assert_exact_span(tokenizer, ids, int(cols.answer_start[0]), int(cols.answer_end[0]), "\\boxed{\\frac{1}{2}}")
    assert (int(cols.answer_start[1]), int(cols.answer_end[1])) == (-1, -1)
    # Without the option there are no span columns at all.
    plain = encode_columns(records, tokenizer, progress=False)
    assert plain.answer_start is None and plain.answer_end is None and (plain.ids == cols.ids).all()


def test_pool_and_selection_keep_the_spans(countdown, monkeypatch):
    from transformers import AutoTokenizer

    import sprint.train.data as data_module

    tok = AutoTokenizer.from_pretrained(countdown / "tokenizer")
    records = read_records(countdown / "sprint_train.jsonl", "sprint")
    monkeypatch.setattr(data_module, "ENCODE_CHUNK", 3)  # several chunks: several pool tasks
    serial = encode_columns(records, tok, progress=False, answer_spans=True)
    pooled = encode_columns(records, tok, num_proc=2, progress=False, answer_spans=True)
    assert (serial.answer_start == pooled.answer_start).all() and (serial.answer_end == pooled.answer_end).all()
    keep = [r.role != "executor" for r in records]
    picked = serial.select(keep)
    assert picked.answer_start.tolist() == serial.answer_start[keep].tolist()
    assert (picked.answer_start >= 0).all()


# ------------------------------------------------------------------------------------------ the loss
def _hand_loss(model, batch, num_items=None):
    """sum(w x CE) / n from the model's full logits: the logits at t predict token t + 1, with token t + 1's weight."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels.flatten(),
                                           ignore_index=-100, reduction="none").view(labels.shape)
    w = batch.get(LOSS_WEIGHTS, torch.ones_like(batch["input_ids"], dtype=torch.float32))[:, 1:]
    n = (labels != -100).sum() if num_items is None else num_items
    return ((w * ce).sum() / n).item()


def test_weighted_loss_matches_a_hand_computation(countdown, tmp_path):
    from sprint.train.trainer import build_trainer

    # max_length keeps the two shortest records (about 300 tokens): a fast forward pass on the CPU.
    cfg = _cfg(countdown, tmp_path, "data.format=sequential", "training.per_device_train_batch_size=2",
               "data.answer_loss_weight=5", "data.max_length=400")
    trainer, data = build_trainer(cfg, progress=False)
    assert len(data.train) == 2 and set(data.train.column_names) >= {"answer_start", "answer_end"}
    batch = next(iter(trainer.get_train_dataloader()))
    assert set(batch) == {"input_ids", "labels", "attention_mask", LOSS_WEIGHTS}
    w, attn = batch[LOSS_WEIGHTS], batch["attention_mask"]
    assert w.dtype == torch.float32 and w.shape == batch["input_ids"].shape
    assert attn.sum(1).unique().numel() == 2  # two lengths: padding exercised
    tok = trainer.processing_class
    for b in range(2):
        assert (w[b][attn[b] == 0] == 0).all()  # padding
        hot = (w[b] == 5).nonzero().flatten()
        assert len(hot) > 0 and (hot.diff() == 1).all()  # one contiguous span
        assert (batch["labels"][b][hot] != -100).all()  # inside the completion
        assert tok.decode(batch["input_ids"][b][hot]).strip().startswith("\\boxed{")
        assert set(w[b][attn[b] == 1].unique().tolist()) == {1.0, 5.0}
    model = trainer.model
    model.train()  # the weighted path is the training loss; dropout is 0 in the tiny Llama
    loss = trainer.compute_loss(model, dict(batch))
    assert loss.item() == pytest.approx(_hand_loss(model, batch), rel=1e-5)
    # Under gradient accumulation the divisor is Trainer's count over the whole step.
    n = int((batch["labels"][:, 1:] != -100).sum())
    loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=torch.tensor(3 * n))
    assert loss.item() == pytest.approx(_hand_loss(model, batch, 3 * n), rel=1e-5)
    # The loss differs from the unweighted one, and gets a gradient.
    plain = {k: v for k, v in batch.items() if k != LOSS_WEIGHTS}
    assert _hand_loss(model, batch) > 1.01 * _hand_loss(model, plain)
    trainer.compute_loss(model, dict(batch)).backward()
    assert model.model.embed_tokens.weight.grad is not None
    # Evaluation keeps the plain loss.
    model.eval()
    assert trainer.compute_loss(model, dict(batch)).item() == pytest.approx(_hand_loss(model, plain), rel=1e-5)
    assert trainer._metrics["train"]["mean_token_accuracy"]  # TRL's metrics still logged


def test_weight_one_is_the_standard_run(countdown, tmp_path):
    from sprint.train.trainer import build_trainer

    cfg = _cfg(countdown, tmp_path, "data.format=sequential", "training.per_device_train_batch_size=2",
               "data.answer_loss_weight=1", "data.max_length=400")
    trainer, data = build_trainer(cfg, progress=False)
    assert "answer_start" not in data.train.column_names and data.answer_spans is None
    assert type(trainer.data_collator).__module__.startswith("trl")  # TRL's own collator
    batch = next(iter(trainer.get_train_dataloader()))
    assert set(batch) == {"input_ids", "labels", "attention_mask"}
    model = trainer.model
    model.train()
    loss = trainer.compute_loss(model, dict(batch)).item()
    assert loss == pytest.approx(_hand_loss(model, batch), rel=1e-5)
    with torch.no_grad():
        assert loss == pytest.approx(model(**batch).loss.item(), rel=1e-5)  # the model's own mean CE


def test_truncated_samples_keep_their_spans_through_trls_preparation(countdown, tmp_path):
    """on_overflow=truncate hands the data to TRL's preparation: the span columns survive it, and a span cut by
    max_length is clipped (here every sample is cut before its answer: no weight left anywhere)."""
    from sprint.train.trainer import build_trainer

    cfg = _cfg(countdown, tmp_path, "data.format=sequential", "training.per_device_train_batch_size=2",
               "data.answer_loss_weight=5", "data.max_length=64", "data.on_overflow=truncate")
    trainer, data = build_trainer(cfg, progress=False)
    assert not (trainer.args.dataset_kwargs or {}).get("skip_prepare_dataset")
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["input_ids"].shape[1] == 64 and (batch[LOSS_WEIGHTS] <= 1).all()
    assert data.answer_spans["train"]["tokens"] == 0


# ------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("bad", ["0", "-1", "nan", "inf"])
def test_weight_must_be_positive_and_finite(bad):
    with pytest.raises(ValueError, match="data.answer_loss_weight"):
        load_config(None, ["data.train=x.jsonl", "model.name_or_path=m", f"data.answer_loss_weight={bad}"])


def test_weight_parses_and_refuses_what_it_cannot_weight(tmp_path):
    base = ["data.train=x.jsonl", "model.name_or_path=m"]
    assert load_config(None, base).data.answer_loss_weight == 1.0
    assert load_config(None, base + ["data.answer_loss_weight=10"]).data.answer_loss_weight == 10.0
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("data:\n  train: x.jsonl\n  answer_loss_weight: 2.5\nmodel:\n  name_or_path: m\n")
    assert load_config(yaml_file).data.answer_loss_weight == 2.5
    with pytest.raises(ValueError, match="data.answer_loss_weight and data.executor_branches"):
        load_config(None, base + ["data.answer_loss_weight=10", "data.executor_branches=true"])
    assert load_config(None, base + ["data.executor_branches=true"]).data.executor_branches  # weight 1: fine
    with pytest.raises(ValueError, match="data.answer_loss_weight and training.sft.packing"):
        load_config(None, base + ["data.answer_loss_weight=10", "training.sft.packing=true"])


# ------------------------------------------------------------------------------------------ end to end
def test_sprint_train_with_answer_weight(countdown, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from sprint.cli import main

    # A few SPRINT records (a planner record, with its answer, then executor records, without), to stay fast.
    evals = tmp_path / "eval.jsonl"
    evals.write_text("".join((countdown / "sprint_val.jsonl").read_text().splitlines(keepends=True)[:2]))
    config = tmp_path / "c.yaml"
    config.write_text(f"data:\n  train: {countdown / 'sprint_train.jsonl'}\n  eval: {evals}\n  max_samples: 4\n"
                      f"  format: sprint\nmodel:\n  name_or_path: {countdown / 'model'}\n"
                      f"training:\n  output_dir: {tmp_path / 'out'}\n  max_steps: 3\n  eval_steps: 3\n"
                      "  learning_rate: 1.0e-3\n  logging_steps: 1\n  per_device_train_batch_size: 2\n")
    assert main(["train", "--config", str(config), "--dry-run", "--no-progress", "data.answer_loss_weight=10"]) == 0
    out = capsys.readouterr().out
    assert "answer spans (data.answer_loss_weight=10, after max_length): train 1/4 samples with one, " in out
    assert "; eval 1/2 samples with one, " in out
    assert main(["train", "--config", str(config), "--no-progress", "data.answer_loss_weight=10"]) == 0
    assert "model saved to" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "out" / "train_metrics.json").read_text())
    spans = metrics["data"]["answer_spans"]
    assert spans["weight"] == 10.0 and 0 < spans["train"]["tokens"] < spans["train"]["loss_tokens"]
    losses = [h["loss"] for h in metrics["log_history"] if "loss" in h]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert all("mean_token_accuracy" in h for h in metrics["log_history"] if "loss" in h)  # TRL's metrics too
    assert math.isfinite(metrics["final_eval"]["eval_loss"])
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "out").config.num_hidden_layers == 2
