"""`data.answer_loss_weight` and `data.answer_loss_pattern` (`sprint.train.weights`): the weighted tokens of real
Countdown records (the answer span, the pattern's matches), the per-token mask through selection, the pool and
truncation, the weighted loss against a hand computation on a tiny random Llama, config validation and a short
`sprint train` run (CPU)."""

from __future__ import annotations

import json
import math
import re

import pytest

torch = pytest.importorskip("torch")

from sprint.train.config import load_config  # noqa: E402
from sprint.train.data import TrainRecord, encode_columns, read_records  # noqa: E402
from sprint.train.weights import ANSWER_MASK, LOSS_WEIGHTS, answer_char_span  # noqa: E402

SOLUTION = r"Solution (\S+)"  # docs/training.md's Countdown pattern


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


def _runs(mask) -> list[tuple[int, int]]:
    """The (start, end) index ranges of the 1s of a 0/1 sequence, in order."""
    runs, start = [], None
    for i, v in enumerate([*list(mask), 0]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            runs.append((start, i))
            start = None
    return runs


def _record_mask(cols, i):
    return cols.answer_mask[cols.offsets[i]:cols.offsets[i + 1]], cols.ids[cols.offsets[i]:cols.offsets[i + 1]]


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


def test_pattern_weights_each_match_group_or_whole():
    from sprint.train.weights import weighted_char_spans

    text = "Dead Solution (83+22)/(18-15)\nSolution 35\nSo \\boxed{35}."
    pick = lambda spans: [text[lo:hi] for lo, hi in spans]
    # The first capturing group when the pattern has one; sorted by position, the answer span included.
    assert pick(weighted_char_spans(text, SOLUTION)) == ["(83+22)/(18-15)", "35", "\\boxed{35}"]
    assert pick(weighted_char_spans(text, r"Solution (?P<expr>\S+)")) == ["(83+22)/(18-15)", "35", "\\boxed{35}"]
    assert pick(weighted_char_spans(text, r"(Solution) (\S+)")) == ["Solution", "Solution", "\\boxed{35}"]
    # Else the whole match (a non-capturing group is no group).
    assert pick(weighted_char_spans(text, r"Solution \S+")) == ["Solution (83+22)/(18-15)", "Solution 35",
                                                                "\\boxed{35}"]
    assert pick(weighted_char_spans(text, r"(?:Dead )?Solution")) == ["Dead Solution", "Solution", "\\boxed{35}"]
    # Empty matches, empty groups and groups that did not take part weight nothing (and finditer moves on).
    assert pick(weighted_char_spans(text, r"Solution (x*)")) == ["\\boxed{35}"]
    assert pick(weighted_char_spans(text, r"Dead (x)?|(?=So)")) == ["\\boxed{35}"]
    # Without a pattern, or without a match, only the answer; without an answer either, nothing.
    assert pick(weighted_char_spans(text)) == pick(weighted_char_spans(text, "nowhere")) == ["\\boxed{35}"]
    assert weighted_char_spans("Solution 35", SOLUTION) == [(9, 11)]
    assert weighted_char_spans("nothing here", SOLUTION) == []


def test_token_ranges_of_several_spans_follow_the_overlap_rule():
    from sprint.train.weights import token_range, weighted_token_ranges

    text = "Solution (1+2)\nx \\boxed{3}"
    pieces = ["Solution", " (", "1", "+2", ")\n", "x", " \\", "boxed", "{", "3", "}"]
    offsets, pos = [], 0
    for p in pieces:
        offsets.append((pos, pos + len(p)))
        pos += len(p)
    assert pos == len(text)
    # The group "(1+2)" is characters 9-14: " (" and ")\n" straddle its edges and count.
    assert weighted_token_ranges(text, offsets, SOLUTION) == [(1, 5), (6, 11)]
    assert weighted_token_ranges(text, offsets) == [(6, 11)]
    assert weighted_token_ranges(text, offsets, r"Solution \S+") == [(0, 5), (6, 11)]
    assert token_range((0, 1), offsets) == (0, 1) and token_range((7, 10), offsets) == (0, 2)
    assert token_range((len(text), len(text) + 3), offsets) is None  # past the last token
    assert token_range((3, 3), offsets) is None  # empty: nothing overlaps it


def test_mask_of_a_record_with_solution_lines_and_an_answer(countdown):
    """The Countdown tokenizer on a hand-written trace: exactly the tokens of the two Solution expressions and the
    boxed answer are marked (the token list written out by hand from the tokenizer's pieces)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(countdown / "tokenizer")
    rec = TrainRecord(id="hand", format="sequential", question="Use [83 22 18 15] to make 35.",
                      completion="<think>\n[83 22 18 15]\nDead Solution (83+22)/(18-15)\nSolution 35\n</think>\n\n"
                                 "So \\boxed{35} it is.")
    expected = {
        None: [["\\", "boxed", "{", "3", "5", "}"]],
        SOLUTION: [[" (", "8", "3", "+", "2", "2", ")", "/", "(", "1", "8", "-", "1", "5", ")"], [" 3", "5"],
                   ["\\", "boxed", "{", "3", "5", "}"]],
        r"Solution \S+": [[" Solution", " (", "8", "3", "+", "2", "2", ")", "/", "(", "1", "8", "-", "1", "5", ")"],
                          ["Solution", " 3", "5"], ["\\", "boxed", "{", "3", "5", "}"]],
    }
    for pattern, runs in expected.items():
        cols = encode_columns([rec], tok, progress=False, answer_spans=True, answer_pattern=pattern)
        mask, ids = _record_mask(cols, 0)
        got = [[tok.decode([t]) for t in ids[lo:hi]] for lo, hi in _runs(mask)]
        # " \\" is one token here: the space merged before the backslash belongs to the answer's first token.
        got = [[p.replace(" \\", "\\") for p in run] for run in got]
        assert got == runs, pattern
        assert set(mask.tolist()) == {0, 1} and not mask[:int(cols.prompt_tokens[0])].any()


def test_answer_tokens_of_countdown_records(countdown, tokenizer):
    for fmt, tail in (("sprint", "\n</Final_answer>\n</think>"), ("sequential", "")):
        records = read_records(countdown / f"{fmt}_train.jsonl", fmt)
        cols = encode_columns(records, tokenizer, progress=False, answer_spans=True)
        assert cols.answer_mask.dtype == "uint8" and len(cols.answer_mask) == len(cols.ids)
        for i, rec in enumerate(records):
            mask, ids = _record_mask(cols, i)
            runs = _runs(mask)
            if rec.role == "executor":  # an execution has no final answer
                assert "\\boxed{" not in rec.completion[rec.completion_start:] and runs == []
                continue
            boxed = rec.completion[slice(*answer_char_span(rec.completion))]
            assert rec.completion.endswith(boxed + tail)  # e.g. \boxed{(47+(91/7))-5}, the record's answer
            assert rec.answer in boxed
            [(lo, hi)] = runs  # one span
            assert int(cols.prompt_tokens[i]) <= lo  # in the completion
            _assert_exact_span(tokenizer, ids.tolist(), lo, hi, boxed)
        assert any(r.role == "executor" for r in records) == (fmt == "sprint")


def test_last_nested_boxed_is_chosen_and_no_boxed_gives_no_span(tokenizer):
    records = [
        TrainRecord(id="two", format="sequential", question="What is half?",
                    completion="<think>\nfirst \\boxed{1} then\n</think>\n\nSo \\boxed{\\frac{1}{2}} it is."),
        TrainRecord(id="none", format="sequential", question="What is half?", completion="<think>\nno idea\n</think>"),
    ]
    cols = encode_columns(records, tokenizer, progress=False, answer_spans=True)
    mask, ids = _record_mask(cols, 0)
    [(lo, hi)] = _runs(mask)
    _assert_exact_span(tokenizer, ids.tolist(), lo, hi, "\\boxed{\\frac{1}{2}}")
    assert not _record_mask(cols, 1)[0].any()
    # Without the option there is no mask column at all.
    plain = encode_columns(records, tokenizer, progress=False)
    assert plain.answer_mask is None and (plain.ids == cols.ids).all()


@pytest.mark.parametrize("pattern", [None, SOLUTION])
def test_pool_and_selection_keep_the_mask(countdown, monkeypatch, pattern):
    import numpy as np
    from transformers import AutoTokenizer

    import sprint.train.data as data_module

    tok = AutoTokenizer.from_pretrained(countdown / "tokenizer")
    records = read_records(countdown / "sprint_train.jsonl", "sprint")
    monkeypatch.setattr(data_module, "ENCODE_CHUNK", 3)  # several chunks: several pool tasks
    serial = encode_columns(records, tok, progress=False, answer_spans=True, answer_pattern=pattern)
    pooled = encode_columns(records, tok, num_proc=2, progress=False, answer_spans=True, answer_pattern=pattern)
    assert (serial.ids == pooled.ids).all() and (serial.answer_mask == pooled.answer_mask).all()
    if pattern is not None:  # the executions that found the solution have weighted tokens too
        assert {records[i].role for i in range(len(records)) if _record_mask(serial, i)[0].any()} == {
            "planner", "executor"}
    keep = np.array([i % 3 != 1 for i in range(len(records))])
    picked = serial.select(keep)
    assert len(picked.answer_mask) == len(picked.ids)
    for j, i in enumerate(np.flatnonzero(keep)):  # each kept record keeps its own mask, aligned with its ids
        assert (_record_mask(picked, j)[0] == _record_mask(serial, i)[0]).all()
        assert (_record_mask(picked, j)[1] == _record_mask(serial, i)[1]).all()


def test_span_stats_count_only_what_max_length_keeps():
    import numpy as np

    from sprint.train.data import TokenColumns, _offsets, answer_span_stats

    lengths = np.array([6, 5, 4])
    mask = np.array([0, 0, 1, 0, 1, 1,  0, 0, 0, 0, 0,  0, 1, 1, 1], dtype=np.uint8)  # noqa: E241
    cols = TokenColumns(["a", "b", "c"], ["planner"] * 3, np.zeros(15, np.int32), np.zeros(15, np.int32),
                        _offsets(lengths), np.array([1, 1, 1]), answer_mask=mask)
    assert answer_span_stats(cols, 100) == {"samples": 3, "with_answer": 2, "tokens": 6, "loss_tokens": 12}
    # max_length 2: a keeps no weighted token, c keeps one.
    assert answer_span_stats(cols, 2) == {"samples": 3, "with_answer": 1, "tokens": 1, "loss_tokens": 3}


def test_collator_weights_the_mask_clipped_to_each_row():
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from sprint.train.weights import AnswerWeightCollator

    collate = AnswerWeightCollator(DataCollatorForLanguageModeling(pad_token_id=0), 4)
    features = [
        # Truncated to 3 tokens by TRL, which cuts input_ids and labels only: the mask keeps its full length.
        {"input_ids": [5, 6, 7], "labels": [-100, 6, 7], ANSWER_MASK: [0, 1, 1, 1, 1]},
        {"input_ids": [5, 6, 7, 8, 9], "labels": [-100, -100, 7, 8, 9], ANSWER_MASK: [0, 0, 1, 0, 1]},
        {"input_ids": [5, 6], "labels": [-100, 6], ANSWER_MASK: [0, 0]},
    ]
    batch = collate(features)
    assert batch[LOSS_WEIGHTS].tolist() == [[1, 4, 4, 0, 0], [1, 1, 4, 1, 4], [1, 1, 0, 0, 0]]
    assert batch[LOSS_WEIGHTS].dtype == torch.float32
    with pytest.raises(ValueError, match="data.answer_loss_weight: .* has 2 entries for 3 tokens"):
        collate([{"input_ids": [5, 6, 7], "labels": [5, 6, 7], ANSWER_MASK: [0, 1]}])
    with pytest.raises(ValueError, match="data.answer_loss_weight: the batch has no 'answer_mask' column"):
        collate([{"input_ids": [5, 6, 7], "labels": [5, 6, 7]}])


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


@pytest.mark.parametrize("pattern", [None, SOLUTION])
def test_weighted_loss_matches_a_hand_computation(countdown, tmp_path, pattern):
    from sprint.train.trainer import build_trainer

    # max_length keeps the two shortest records (about 300 tokens): a fast forward pass on the CPU.
    cfg = _cfg(countdown, tmp_path, "data.format=sequential", "training.per_device_train_batch_size=2",
               "data.answer_loss_weight=5", "data.max_length=400",
               *([f"data.answer_loss_pattern={pattern}"] if pattern else []))
    assert cfg.data.answer_loss_pattern == pattern
    trainer, data = build_trainer(cfg, progress=False)
    assert len(data.train) == 2 and ANSWER_MASK in data.train.column_names
    assert data.answer_spans["pattern"] == pattern
    batch = next(iter(trainer.get_train_dataloader()))
    assert set(batch) == {"input_ids", "labels", "attention_mask", LOSS_WEIGHTS}
    w, attn = batch[LOSS_WEIGHTS], batch["attention_mask"]
    assert w.dtype == torch.float32 and w.shape == batch["input_ids"].shape
    assert attn.sum(1).unique().numel() == 2  # two lengths: padding exercised
    tok = trainer.processing_class
    for b in range(2):
        assert (w[b][attn[b] == 0] == 0).all()  # padding
        hot = (w[b] == 5).nonzero().flatten()
        assert len(hot) > 0 and (batch["labels"][b][hot] != -100).all()  # inside the completion
        runs = [tok.decode(batch["input_ids"][b][lo:hi]).strip() for lo, hi in _runs((w[b] == 5).tolist())]
        assert runs[-1].startswith("\\boxed{")  # the answer, last
        if pattern is None:
            assert len(runs) == 1  # one contiguous span
        else:  # a sequential trace: each Solution line's expression, then the answer
            text = tok.decode(batch["input_ids"][b][attn[b] == 1])
            assert len(runs) == 1 + text.count("Solution ") > 1
            assert all(runs[-1] == f"\\boxed{{{r}}}" for r in runs[:-1])  # the same expression each time
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


@pytest.mark.integration
def test_weighted_loss_with_executor_branches_is_the_separate_records_loss(countdown, tmp_path):
    """With data.executor_branches the weighted training loss over every merged sequence equals the weighted loss
    over every separate record (same weights, same loss tokens, the same divisor): each token keeps its record's
    weight and its record's context (tiny random Llama, CPU)."""
    from sprint.train.trainer import build_trainer

    common = ["data.format=sprint", "data.answer_loss_weight=5", f"data.answer_loss_pattern={SOLUTION}",
              "data.max_length=16384", "training.per_device_train_batch_size=256"]
    losses, counts = {}, {}
    for name, extra in (("merged", ["data.executor_branches=true"]), ("separate", [])):
        trainer, data = build_trainer(_cfg(countdown, tmp_path / name, *common, *extra), progress=False)
        batch = next(iter(trainer.get_train_dataloader()))  # the whole (small) training set in one batch
        assert len(batch["input_ids"]) == len(data.train)
        assert (batch[LOSS_WEIGHTS] == 5).sum() > 0
        if name == "merged":
            assert (batch["seg_start"] > 0).any()
        n = (batch["labels"][:, 1:] != -100).sum()
        counts[name] = (int(n), int(((batch[LOSS_WEIGHTS][:, 1:] == 5) & (batch["labels"][:, 1:] != -100)).sum()))
        trainer.model.train()
        with torch.no_grad():
            losses[name] = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=n).item()
    assert counts["merged"] == counts["separate"]  # every loss token once, every weighted one once
    assert losses["merged"] == pytest.approx(losses["separate"], rel=1e-4)


def test_weight_one_is_the_standard_run(countdown, tmp_path):
    from sprint.train.trainer import build_trainer

    cfg = _cfg(countdown, tmp_path, "data.format=sequential", "training.per_device_train_batch_size=2",
               "data.answer_loss_weight=1", "data.max_length=400")
    trainer, data = build_trainer(cfg, progress=False)
    assert ANSWER_MASK not in data.train.column_names and data.answer_spans is None
    assert type(trainer.data_collator).__module__.startswith("trl")  # TRL's own collator
    batch = next(iter(trainer.get_train_dataloader()))
    assert set(batch) == {"input_ids", "labels", "attention_mask"}
    model = trainer.model
    model.train()
    loss = trainer.compute_loss(model, dict(batch)).item()
    assert loss == pytest.approx(_hand_loss(model, batch), rel=1e-5)
    with torch.no_grad():
        assert loss == pytest.approx(model(**batch).loss.item(), rel=1e-5)  # the model's own mean CE


def test_truncated_samples_keep_their_mask_through_trls_preparation(countdown, tmp_path):
    """on_overflow=truncate hands the data to TRL's preparation: the mask column survives it (untruncated: TRL cuts
    only input_ids and labels), and the collator clips it to the row (here every sample is cut before its answer:
    no weight left anywhere)."""
    from sprint.train.trainer import build_trainer

    cfg = _cfg(countdown, tmp_path, "data.format=sequential", "training.per_device_train_batch_size=2",
               "data.answer_loss_weight=5", "data.max_length=64", "data.on_overflow=truncate")
    trainer, data = build_trainer(cfg, progress=False)
    assert not (trainer.args.dataset_kwargs or {}).get("skip_prepare_dataset")
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["input_ids"].shape[1] == 64 and (batch[LOSS_WEIGHTS] <= 1).all()
    assert data.answer_spans["train"]["tokens"] == 0 and data.answer_spans["train"]["with_answer"] == 0


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
    both = load_config(None, base + ["data.answer_loss_weight=10", "data.executor_branches=true"]).data
    assert both.executor_branches and both.answer_loss_weight == 10.0  # merged sequences keep each record's mask
    with pytest.raises(ValueError, match="data.answer_loss_weight and training.sft.packing"):
        load_config(None, base + ["data.answer_loss_weight=10", "training.sft.packing=true"])


def test_pattern_parses_and_is_validated(tmp_path):
    base = ["data.train=x.jsonl", "model.name_or_path=m", "data.answer_loss_weight=10"]
    assert load_config(None, base).data.answer_loss_pattern is None
    assert load_config(None, base + [f"data.answer_loss_pattern={SOLUTION}"]).data.answer_loss_pattern == SOLUTION
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("data:\n  train: x.jsonl\n  answer_loss_weight: 10\n"
                         "  answer_loss_pattern: 'Solution (\\S+)'\nmodel:\n  name_or_path: m\n")
    assert load_config(yaml_file).data.answer_loss_pattern == SOLUTION
    with pytest.raises(ValueError, match=r"data.answer_loss_pattern: 'Solution \(' is not a valid regular expression: "
                                         "missing \\), unterminated subpattern"):
        load_config(None, base + ["data.answer_loss_pattern=Solution ("])
    with pytest.raises(ValueError, match="data.answer_loss_pattern: .* matches the empty string"):
        load_config(None, base + [r"data.answer_loss_pattern=(\S+)?"])
    # At weight 1 no token is weighted: a pattern would silently do nothing.
    with pytest.raises(ValueError, match=r"data.answer_loss_pattern: needs data.answer_loss_weight != 1"):
        load_config(None, ["data.train=x.jsonl", "model.name_or_path=m", f"data.answer_loss_pattern={SOLUTION}"])
    with pytest.raises(ValueError, match="data.answer_loss_weight and training.sft.truncation_mode"):
        load_config(None, base + ["training.sft={truncation_mode: keep_end}"])


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
    assert ("answer spans (data.answer_loss_weight=10, after max_length): train 1/4 samples with weighted tokens, "
            in out)
    assert "; eval 1/2 samples with weighted tokens, " in out
    plain_tokens = int(re.search(r"train 1/4 samples with weighted tokens, (\d+) tokens", out).group(1))
    # The pattern weights the planner's copy of the solution too (these executors did not find it).
    pattern = f"data.answer_loss_pattern={SOLUTION}"
    assert main(["train", "--config", str(config), "--dry-run", "--no-progress", "data.answer_loss_weight=10",
                 pattern]) == 0
    out = capsys.readouterr().out
    assert (f"answer spans (data.answer_loss_weight=10, data.answer_loss_pattern='{SOLUTION}', after max_length): "
            in out)
    assert int(re.search(r"train 1/4 samples with weighted tokens, (\d+) tokens", out).group(1)) > plain_tokens
    assert main(["train", "--config", str(config), "--no-progress", "data.answer_loss_weight=10", pattern]) == 0
    assert "model saved to" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "out" / "train_metrics.json").read_text())
    spans = metrics["data"]["answer_spans"]
    assert spans["weight"] == 10.0 and spans["pattern"] == SOLUTION
    assert 0 < spans["train"]["tokens"] < spans["train"]["loss_tokens"]
    losses = [h["loss"] for h in metrics["log_history"] if "loss" in h]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    assert all("mean_token_accuracy" in h for h in metrics["log_history"] if "loss" in h)  # TRL's metrics too
    assert math.isfinite(metrics["final_eval"]["eval_loss"])
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "out").config.num_hidden_layers == 2
