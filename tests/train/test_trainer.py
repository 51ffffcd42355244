"""Integration: a tiny real Llama trained with TRL's SFTTrainer on real curated records (CPU, a few seconds each)."""

from __future__ import annotations

import json

import pytest
import torch

from sprint.format import tags as T
from sprint.train.config import load_config
from sprint.train.trainer import CONFIG_FILE, METRICS_FILE, build_model, build_trainer, load_tokenizer, train

pytestmark = pytest.mark.integration


def _cfg(records_file, model_dir, tmp_path, *overrides):
    return load_config(None, [f"data.train={records_file}", f"model.name_or_path={model_dir}",
                              f"training.output_dir={tmp_path / 'out'}", "training.logging_steps=1",
                              "training.report_to=none", *overrides])


def _completion_loss(model, row) -> float:
    ids = torch.tensor([row["input_ids"]])
    labels = torch.tensor([[t if m else -100 for t, m in zip(row["input_ids"], row["completion_mask"])]])
    with torch.no_grad():
        return model(input_ids=ids, labels=labels).loss.item()


def test_only_completion_tokens_carry_loss(records_file, tiny_model_dir, tmp_path):
    cfg = _cfg(records_file, tiny_model_dir, tmp_path, "data.format=sequential",
               "training.per_device_train_batch_size=2")
    trainer, data = build_trainer(cfg, progress=False)
    batch = next(iter(trainer.get_train_dataloader()))
    rows = {tuple(r["input_ids"]): r for r in data.train}
    # The dataset holds no texts; encode_records gives them, with the same ids.
    from sprint.train.data import encode_records, read_records

    texts = {r["id"]: r for r in encode_records(read_records(records_file, "sequential"), trainer.processing_class,
                                                progress=False)}
    assert all(list(texts[r["id"]]["input_ids"]) == r["input_ids"] for r in data.train)
    assert batch["input_ids"].shape[0] == 2
    lengths = set()
    for ids, labels, attn in zip(batch["input_ids"].tolist(), batch["labels"].tolist(),
                                 batch["attention_mask"].tolist()):
        n = sum(attn)
        lengths.add(n)
        row = rows[tuple(ids[:n])]
        p, c = row["prompt_tokens"], row["completion_tokens"]
        assert p > 0 and c > 0 and p + c == n
        assert labels[:p] == [-100] * p                       # system + question: no loss
        assert labels[p:n] == ids[p:n]                        # the whole assistant text and EOS: loss
        assert labels[n:] == [-100] * (len(ids) - n)          # padding: no loss
        assert labels[n - 1] == trainer.processing_class.eos_token_id
        decoded = trainer.processing_class.decode(labels[p:n - 1])
        text = texts[row["id"]]
        assert decoded == text["completion"] and text["prompt"].endswith(T.open_tag(T.THINK) + "\n")
    assert len(lengths) == 2  # two records of different lengths, so padding was exercised


def test_loss_goes_down_on_real_sprint_records_and_best_checkpoint_is_saved(records_file, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # max_length keeps the shortest SPRINT sample (1.6k tokens: the released trajectory_data_2); the others are dropped.
    cfg = _cfg(records_file, tiny_model_dir, tmp_path, "data.format=sprint", "data.max_length=2000",
               f"data.eval={records_file}", "training.max_steps=8", "training.eval_steps=4",
               "training.learning_rate=2e-2", "training.warmup_ratio=0.1")
    logged: list[str] = []
    result = train(cfg, progress=False, log=logged.append)
    assert any(line.startswith("setup: data ") and "tokenize " in line for line in logged)
    out = result.output_dir
    tok = AutoTokenizer.from_pretrained(out)
    before = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    after = AutoModelForCausalLM.from_pretrained(out)
    from sprint.train.data import encode_records, read_records

    (row,) = encode_records([r for r in read_records(records_file, "sprint") if r.id == "trajectory_data_2"], tok,
                            progress=False)
    assert _completion_loss(after, row) < 0.8 * _completion_loss(before, row)
    m = result.metrics
    losses = [h["loss"] for h in m["log_history"] if "loss" in h]
    assert losses[-1] < losses[0]
    assert m["best_model_checkpoint"] and m["best_eval_loss"] == pytest.approx(m["final_eval"]["eval_loss"], rel=1e-4)
    assert m["global_step"] == 8 and m["num_input_tokens_seen"] > 0 and m["steady_tokens_per_second"] > 0
    assert set(m["setup_seconds"]) == {"read_s", "tokenize_s", "dataset_s", "data_s", "trainer_s"}
    assert min(m["setup_seconds"].values()) >= 0
    assert json.loads((out / METRICS_FILE).read_text())["global_step"] == 8
    assert load_config(out / CONFIG_FILE) == cfg  # the resolved config reloads to the same run
    assert (out / "checkpoints").is_dir()


def test_from_scratch_with_token_budget_and_seeded_init(records_file, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    arch = ["model.architecture.model_type=llama", "model.architecture.hidden_size=32",
            "model.architecture.num_hidden_layers=1", "model.architecture.num_attention_heads=2",
            "model.architecture.num_key_value_heads=2", "model.architecture.intermediate_size=64",
            "model.architecture.max_position_embeddings=2048"]
    common = [f"data.train={records_file}", f"model.tokenizer={tiny_model_dir}", "training.seed=7",
              "training.learning_rate=1e-3", "training.save_dtype=bfloat16", *arch]
    sprint_cfg = load_config(None, common + ["data.format=sprint", f"training.output_dir={tmp_path / 's'}"])
    seq_cfg = load_config(None, common + ["data.format=sequential", f"training.output_dir={tmp_path / 'q'}",
                                          "training.max_tokens_budget=3000"])
    tok = load_tokenizer(seq_cfg)
    a, b = build_model(sprint_cfg, tok), build_model(seq_cfg, tok)
    assert a.config.vocab_size == len(tok) and a.config.eos_token_id == tok.eos_token_id
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))

    result = train(seq_cfg, progress=False, log=lambda s: None)
    m = result.metrics
    longest = max(m["data"]["train"]["max"], 1)
    assert 3000 <= m["num_input_tokens_seen"] < 3000 + longest  # stopped by the budget, within one batch
    assert m["plan"]["max_steps"] >= m["global_step"]
    model = AutoModelForCausalLM.from_pretrained(result.output_dir)
    assert model.dtype == torch.bfloat16 and model.config.num_hidden_layers == 1


def test_lora_adapter_is_merged_into_a_plain_hf_model(records_file, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    cfg = _cfg(records_file, tiny_model_dir, tmp_path, "data.format=sequential", "lora.enabled=true", "lora.r=4",
               "lora.alpha=8", "lora.target_modules=q_proj,v_proj", "training.max_steps=2",
               "training.learning_rate=1e-2")
    out = train(cfg, progress=False, log=lambda s: None).output_dir
    assert (out / "adapter" / "adapter_config.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert not any("lora" in k for k in merged.state_dict())
    q_merged = merged.model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(q_merged, base.model.layers[0].self_attn.q_proj.weight)
    assert torch.equal(merged.model.layers[0].mlp.up_proj.weight, base.model.layers[0].mlp.up_proj.weight)


def test_paper_preset_reaches_the_trainer_unchanged(records_file, tiny_model_dir, tmp_path):
    """The paper's hyperparameters arrive in TRL's SFTConfig under the right names (bf16/DeepSpeed off on CPU)."""
    from pathlib import Path

    from sprint.train.data import prepare_data
    from sprint.train.trainer import build_sft_config, plan_steps

    preset = Path(__file__).resolve().parents[2] / "configs" / "paper-7b.yaml"
    cfg = load_config(preset, [f"data.train={records_file}", f"model.name_or_path={tiny_model_dir}",
                               f"training.output_dir={tmp_path / 'out'}", "data.max_length=10000",
                               "training.bf16=false", "training.deepspeed=null"])
    data = prepare_data(cfg, load_tokenizer(cfg), progress=False)
    assert len(data.train) == 2 and len(data.eval) == 1  # eval_fraction holds out whole questions
    args = build_sft_config(cfg, data, progress=False)
    assert (args.num_train_epochs, args.per_device_train_batch_size, args.learning_rate, args.weight_decay) == \
        (5, 1, 1e-5, 1e-4)
    assert args.lr_scheduler_type == "linear" and args.get_warmup_steps(1000) == 50
    assert args.eval_strategy == "steps" and args.eval_steps == 100 and args.save_steps == 100
    assert args.load_best_model_at_end and args.metric_for_best_model == "eval_loss" and not args.greater_is_better
    assert args.completion_only_loss is True and args.max_length == 10000 and args.gradient_checkpointing
    assert args.output_dir == str(tmp_path / "out" / "checkpoints")
    assert plan_steps(cfg, data)["max_steps"] == 10  # 2 samples x 5 epochs at global batch 1


def test_tokenized_data_skips_trls_preparation_and_the_sampler_reads_the_length_column(records_file, tiny_model_dir,
                                                                                       tmp_path, monkeypatch):
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from sprint.train.trainer import plan_steps

    cfg = _cfg(records_file, tiny_model_dir, tmp_path, "data.format=sprint", "data.max_length=2000",
               f"data.eval={records_file}", "training.per_device_train_batch_size=2",
               "training.sft.train_sampling_strategy=group_by_length")
    trainer, data = build_trainer(cfg, progress=False)
    # Every sample fits max_length: TRL's maps would change nothing, so they are skipped and our labels are used.
    assert trainer.args.dataset_kwargs == {"skip_prepare_dataset": True}
    assert trainer.train_dataset is data.train
    lengths = [len(ids) for ids in data.train["input_ids"]]
    eval_lengths = [len(ids) for ids in data.eval["input_ids"]]
    assert data.lengths("train") == lengths
    assert plan_steps(cfg, data)["tokens_per_epoch"] == sum(lengths)

    def no_row_reads(*a, **k):
        raise AssertionError("the sampler read the rows for their lengths")

    monkeypatch.setattr(type(data.train), "__iter__", no_row_reads)  # LengthGroupedSampler's fallback iterates rows
    sampler = trainer._get_train_sampler(trainer._remove_unused_columns(trainer.train_dataset))
    assert isinstance(sampler, LengthGroupedSampler) and sampler.lengths == lengths
    eval_sampler = trainer._get_eval_sampler(trainer._remove_unused_columns(trainer.eval_dataset))
    assert eval_sampler.lengths == eval_lengths
    monkeypatch.undo()
    batch = next(iter(trainer.get_train_dataloader()))
    assert set(batch) == {"input_ids", "labels", "attention_mask"}  # the length column stops at the collator


def test_truncation_falls_back_to_trls_preparation(records_file, tiny_model_dir, tmp_path):
    cfg = _cfg(records_file, tiny_model_dir, tmp_path, "data.format=sprint", "data.max_length=1000",
               "data.on_overflow=truncate", "data.num_proc=2", "training.per_device_train_batch_size=2",
               "training.sft.train_sampling_strategy=group_by_length")
    trainer, data = build_trainer(cfg, progress=False)
    assert not (trainer.args.dataset_kwargs or {}).get("skip_prepare_dataset")
    assert data.num_proc == 2  # tokenized by a pool of 2
    ds = trainer.train_dataset
    assert max(data.lengths("train")) > 0 and len(ds) == len(data.train)
    for before, after in zip(data.train, ds):
        assert after["input_ids"] == before["input_ids"][:1000] and after["labels"] == before["labels"][:1000]
        assert after["length"] == len(after["input_ids"])  # the length column already counted the truncation
    sampler = trainer._get_train_sampler(trainer._remove_unused_columns(ds))
    assert sampler.lengths == [len(ids) for ids in ds["input_ids"]]
