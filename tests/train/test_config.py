"""TrainConfig: typed overrides, clear errors for unknown keys, `base:` inheritance and the shipped presets."""

from __future__ import annotations

from pathlib import Path

import pytest

from sprint.train.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
REQUIRED = ["data.train=x.jsonl", "model.name_or_path=some/model"]


def test_overrides_are_typed_like_their_fields():
    cfg = load_config(None, REQUIRED + [
        "training.learning_rate=1e-5",            # YAML would read this as a string
        "training.max_steps=1_000",
        "training.bf16=false",
        "training.eval_steps=null",
        "lora.target_modules=q_proj,v_proj",
        "data.format=sequential",
        "training.sft.packing=true",
    ])
    assert cfg.training.learning_rate == 1e-5 and isinstance(cfg.training.learning_rate, float)
    assert cfg.training.max_steps == 1000
    assert cfg.training.bf16 is False
    assert cfg.training.eval_steps is None
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]
    assert cfg.data.format == "sequential"
    assert cfg.training.sft == {"packing": True}
    assert load_config(None, REQUIRED + ["training.bf16=auto"]).training.bf16 == "auto"


def test_free_form_values_keep_yes_no_as_strings(tmp_path):
    # YAML 1.1 reads `no` as False; TRL's save_strategy=no must stay the string "no".
    cfg = load_config(None, REQUIRED + ["training.sft.save_strategy=no", "training.sft.shuffle_dataset=true"])
    assert cfg.training.sft == {"save_strategy": "no", "shuffle_dataset": True}
    path = tmp_path / "c.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg


def test_free_form_architecture_keys_take_yaml_values():
    cfg = load_config(None, ["data.train=x.jsonl", "model.tokenizer=tok", "model.architecture.model_type=llama",
                             "model.architecture.hidden_size=384", "model.architecture.tie_word_embeddings=true"])
    assert cfg.model.architecture == {"model_type": "llama", "hidden_size": 384, "tie_word_embeddings": True}


@pytest.mark.parametrize("override, message", [
    ("training.lr=1", "unknown config key 'training.lr'"),
    ("trainig.max_steps=1", "unknown config key 'trainig'"),
    ("training.max_steps=1.5", "training.max_steps: expected an integer"),
    ("training.bf16=maybe", "training.bf16"),
    ("data.format=seq", "data.format"),
    ("training.learning_rate.x=1", "'training.learning_rate' is a float"),
    ("training", "expected key=value"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_config(None, REQUIRED + [override])


def test_unknown_key_in_file_is_an_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name_or_path: m\ndata:\n  train: x.jsonl\n  max_lenght: 10\n")
    with pytest.raises(ValueError, match="unknown config key 'data.max_lenght'"):
        load_config(path)


def test_cross_field_validation():
    with pytest.raises(ValueError, match="data.train"):
        load_config(None, ["model.name_or_path=m"])
    with pytest.raises(ValueError, match="model.tokenizer"):
        load_config(None, ["data.train=x", "model.architecture.model_type=llama"])
    with pytest.raises(ValueError, match="max_tokens_budget and training.max_steps"):
        load_config(None, REQUIRED + ["training.max_steps=5", "training.max_tokens_budget=100"])
    with pytest.raises(ValueError, match="data.num_proc"):
        load_config(None, REQUIRED + ["data.num_proc=0"])
    assert load_config(None, REQUIRED + ["data.num_proc=4"]).data.num_proc == 4
    assert load_config(None, REQUIRED).data.num_proc is None  # automatic
    # Executor branches are checked with the config, before any data is read.
    with pytest.raises(ValueError, match="needs SPRINT records"):
        load_config(None, REQUIRED + ["data.executor_branches=true", "data.format=sequential"])
    with pytest.raises(ValueError, match="on_overflow=truncate"):
        load_config(None, REQUIRED + ["data.executor_branches=true", "data.on_overflow=truncate"])
    assert load_config(None, REQUIRED + ["data.executor_branches=true", "data.format=sprint"]).data.executor_branches


def test_paper_presets_carry_the_paper_settings():
    cfg = load_config(CONFIGS / "paper-7b.yaml")
    t = cfg.training
    assert cfg.model.name_or_path == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B" and not cfg.lora.enabled
    assert (t.num_train_epochs, t.per_device_train_batch_size, t.learning_rate, t.weight_decay) == (5, 1, 1e-5, 1e-4)
    assert (t.warmup_ratio, t.lr_scheduler_type, t.eval_steps, t.load_best_model_at_end) == (0.05, "linear", 100, True)
    assert t.bf16 is True and t.deepspeed == "configs/deepspeed/zero3.json"
    assert (CONFIGS.parent / t.deepspeed).is_file()
    seq = load_config(CONFIGS / "paper-7b-sequential.yaml")
    assert seq.data.format == "sequential" and cfg.data.format == "sprint"
    # The baseline differs only in what it trains on and where it writes.
    assert seq.training.output_dir != t.output_dir
    seq.training.output_dir, seq.data.format, seq.name = t.output_dir, cfg.data.format, cfg.name
    assert seq == cfg
    lora = load_config(CONFIGS / "paper-7b-lora.yaml")
    assert lora.lora.enabled and lora.training.deepspeed is None
    assert lora.training.gradient_accumulation_steps == 8  # one GPU, the paper's global batch of 8


def test_countdown_preset_trains_both_formats_alike():
    sprint = load_config(CONFIGS / "countdown-small.yaml", ["data.format=sprint"])
    seq = load_config(CONFIGS / "countdown-small.yaml", ["data.format=sequential"])
    # {format} in the preset's paths: one override switches records and output directory, nothing else.
    assert (sprint.data.train, seq.data.train) == ("runs/countdown/data/sprint_train.jsonl",
                                                   "runs/countdown/data/sequential_train.jsonl")
    assert (sprint.data.eval, seq.data.eval) == ("runs/countdown/data/sprint_val.jsonl",
                                                 "runs/countdown/data/sequential_val.jsonl")
    assert (sprint.training.output_dir, seq.training.output_dir) == ("runs/countdown/models/sprint",
                                                                     "runs/countdown/models/sequential")
    seq.training.output_dir = sprint.training.output_dir
    assert sprint.model == seq.model and sprint.training == seq.training
    arch = sprint.model.architecture
    assert arch["model_type"] == "llama" and 256 <= arch["hidden_size"] <= 384 and 4 <= arch["num_hidden_layers"] <= 8
    assert sprint.data.max_length == 4096 and sprint.training.max_tokens_budget > 0
    # The bundled SPRINT model's preset: the same run plus the answer weight on the Solution expressions and the
    # executor records as merged branches (longer sequences, so a longer limit and as many tokens per optimizer
    # step in fewer, unaccumulated sequences), nothing else.
    bundled = load_config(CONFIGS / "countdown-small-sprint.yaml")
    assert bundled.data.format == "sprint" and bundled.data.answer_loss_weight == 10
    assert bundled.data.answer_loss_pattern == r"Solution\s(\S+)"
    assert bundled.data.executor_branches and bundled.data.max_length == 8192
    t = bundled.training
    assert (t.per_device_train_batch_size, t.gradient_accumulation_steps) == (26, 1)
    assert t.max_tokens_budget == sprint.training.max_tokens_budget and t.seed == sprint.training.seed
    bundled.data.answer_loss_weight, bundled.data.answer_loss_pattern = 1.0, None
    bundled.data.executor_branches, bundled.data.max_length = False, sprint.data.max_length
    t.per_device_train_batch_size = sprint.training.per_device_train_batch_size
    t.gradient_accumulation_steps = sprint.training.gradient_accumulation_steps
    bundled.name = sprint.name
    assert bundled == sprint
    assert seq.data.answer_loss_weight == 1.0 and seq.data.answer_loss_pattern is None


def test_format_placeholder_needs_a_format():
    with pytest.raises(ValueError, match=r"data.train: .*\{format\} but data.format is not set"):
        load_config(None, ["data.train=runs/{format}.jsonl", "model.name_or_path=m"])
