"""Training configuration: the `TrainConfig` record, loaded from YAML with `key=value` overrides.

A config has four sections (`model`, `data`, `lora`, `training`). Every value goes through one typed parser, both
from the file and from the command line, so `training.learning_rate: 1e-5` (which YAML reads as a string) and
`training.learning_rate=1e-5` on the command line both become the float 1e-5, and a misspelt key is an error that
names it instead of a setting that is silently ignored. A file may start from another one with `base: other.yaml`
(deep-merged, the child wins), so the sequential baseline shares every hyperparameter with the SPRINT run.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from sprint.train.weights import check_pattern, check_weight

Format = Literal["sprint", "sequential"]
PLACEHOLDER_FIELDS = (("data", "train"), ("data", "eval"), ("training", "output_dir"))


@dataclass
class ModelSection:
    """Which model to train: a pretrained one to fine-tune, or an architecture to build from scratch."""

    name_or_path: str | None = None  # hub id or local dir, loaded with from_pretrained (fine-tuning)
    tokenizer: str | None = None  # tokenizer dir or id; defaults to name_or_path
    architecture: dict[str, Any] | None = None  # from scratch: AutoConfig kwargs with `model_type` (e.g. llama)
    dtype: str = "float32"  # weight dtype when loading/creating: float32 | bfloat16 | float16 | auto
    attn_implementation: str | None = None  # e.g. sdpa, flash_attention_2
    trust_remote_code: bool = False


@dataclass
class DataSection:
    """Where the curated records are and how they become training sequences."""

    train: str | None = None  # JSONL of training records (required)
    eval: str | None = None  # JSONL of evaluation records; else eval_fraction of train (split by question)
    eval_fraction: float = 0.0
    format: Format | None = None  # keep only records of this format; required when the file mixes formats
    max_length: int = 4096  # tokens, prompt + completion + eos
    on_overflow: Literal["drop", "truncate", "error"] = "drop"  # what to do with longer samples
    max_samples: int | None = None  # cap on training records (after filtering), for quick runs
    # SPRINT only: merge each executor record into its planner record's sequence as a branch under a tree attention
    # mask (sprint.train.branches): the same tokens in the same contexts, without repeating the executors' context
    executor_branches: bool = False
    # Loss weight of each record's final answer (its last \boxed{...}, sprint.train.weights) against 1 for the other
    # completion tokens; 1.0 trains exactly as without it
    answer_loss_weight: float = 1.0
    # With the weight != 1: a regular expression whose every match in a completion is weighted too (its first
    # capturing group when it has one, else the whole match), e.g. 'Solution (\S+)' for Countdown's solution lines
    answer_loss_pattern: str | None = None
    num_proc: int | None = None  # processes that tokenize; None: one per CPU when there are many records and
    #                              more than 2 CPUs (divided among the ranks of this machine), else 1


@dataclass
class LoraSection:
    """LoRA adapters (peft). `merge` folds them into the base weights for the saved final model."""

    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    merge: bool = True


@dataclass
class TrainingSection:
    """Optimisation, evaluation and output settings (mapped onto TRL's SFTConfig)."""

    output_dir: str = "runs/train"  # final model here; checkpoints in output_dir/checkpoints
    num_train_epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    max_tokens_budget: int | None = None  # stop after this many non-padding training tokens (all devices)
    per_device_train_batch_size: int = 1
    per_device_eval_batch_size: int = 1
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0  # fraction of the total steps spent warming up linearly
    lr_scheduler_type: str = "linear"  # linear: after the warm-up, decay linearly to zero
    max_grad_norm: float = 1.0
    eval_steps: int | None = None  # evaluate every N steps (needs eval data); keeps the best checkpoint
    save_steps: int | None = None  # defaults to eval_steps (or 500 without evaluation)
    save_total_limit: int | None = 2
    load_best_model_at_end: bool = True
    logging_steps: int = 10
    seed: int = 42
    bf16: Literal["auto"] | bool = "auto"  # auto: bf16 where the GPU supports it
    gradient_checkpointing: bool = False
    deepspeed: str | None = None  # DeepSpeed JSON config, passed to the trainer as is
    save_dtype: str | None = None  # cast the final model to this dtype before saving (e.g. bfloat16)
    report_to: str = "none"
    resume_from_checkpoint: str | None = None
    sft: dict[str, Any] = field(default_factory=dict)  # any other SFTConfig argument, passed through


@dataclass
class TrainConfig:
    """One training run."""

    name: str | None = None
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    lora: LoraSection = field(default_factory=LoraSection)
    training: TrainingSection = field(default_factory=TrainingSection)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def resolve_placeholders(self) -> "TrainConfig":
        """Fill `{format}` in data.train, data.eval and training.output_dir with data.format.

        So one preset trains both models of a pair: `data.format=sequential` alone switches the records read and the
        directory written (the Countdown data has `sprint_train.jsonl` and `sequential_train.jsonl` side by side).
        """
        for section, key in PLACEHOLDER_FIELDS:
            obj = getattr(self, section)
            value = getattr(obj, key)
            if value and "{format}" in value:
                if self.data.format is None:
                    raise ValueError(f"{section}.{key}: {value!r} uses {{format}} but data.format is not set")
                setattr(obj, key, value.replace("{format}", self.data.format))
        return self

    def validate(self) -> "TrainConfig":
        """Check the settings that cannot be checked one at a time; raise ValueError naming the key."""
        m, d, t = self.model, self.data, self.training
        if not d.train:
            raise ValueError("data.train: a JSONL file of training records is required")
        if not m.name_or_path and not m.architecture:
            raise ValueError("model: set model.name_or_path (fine-tune) or model.architecture (from scratch)")
        if m.name_or_path and m.architecture:
            raise ValueError("model: set only one of model.name_or_path and model.architecture")
        if m.architecture and not m.tokenizer:
            raise ValueError("model.tokenizer: a model built from model.architecture needs a tokenizer directory")
        if m.architecture and "model_type" not in m.architecture:
            raise ValueError("model.architecture.model_type: required (e.g. llama)")
        if not 0.0 <= d.eval_fraction < 1.0:
            raise ValueError(f"data.eval_fraction: must be in [0, 1), got {d.eval_fraction}")
        if d.max_length <= 0:
            raise ValueError(f"data.max_length: must be positive, got {d.max_length}")
        if d.num_proc is not None and d.num_proc < 1:
            raise ValueError(f"data.num_proc: must be at least 1 (or null: automatic), got {d.num_proc}")
        if d.executor_branches and d.format == "sequential":
            raise ValueError("data.executor_branches: needs SPRINT records (data.format=sprint); sequential records "
                             "have no executors")
        if d.executor_branches and d.on_overflow == "truncate":
            raise ValueError("data.executor_branches: on_overflow=truncate would cut branches out of their mask; "
                             "use drop or error")
        if d.answer_loss_pattern is not None:
            check_pattern(d.answer_loss_pattern)
            if check_weight(d.answer_loss_weight) == 1.0:
                raise ValueError("data.answer_loss_pattern: needs data.answer_loss_weight != 1 (at weight 1 no "
                                 "token is weighted, so the pattern would do nothing)")
        if check_weight(d.answer_loss_weight) != 1.0:
            for key in ("packing", "padding_free"):
                if t.sft.get(key):
                    raise ValueError(f"data.answer_loss_weight and training.sft.{key}: not supported together (the "
                                     "answer weights need one padded row per sample)")
            if t.sft.get("truncation_mode", "keep_start") != "keep_start":
                # The collator keeps the start of a truncated sample's mask, as keep_start keeps the start of its ids.
                raise ValueError("data.answer_loss_weight and training.sft.truncation_mode: only keep_start is "
                                 f"supported with the weight, got {t.sft['truncation_mode']!r}")
        if not 0.0 <= t.warmup_ratio < 1.0:
            raise ValueError(f"training.warmup_ratio: must be in [0, 1), got {t.warmup_ratio}")
        if t.max_tokens_budget is not None and t.max_tokens_budget <= 0:
            raise ValueError(f"training.max_tokens_budget: must be positive, got {t.max_tokens_budget}")
        if t.max_tokens_budget is not None and t.max_steps > 0:
            raise ValueError("training.max_tokens_budget and training.max_steps: set only one")
        if self.lora.enabled and m.architecture:
            raise ValueError("lora.enabled: LoRA needs a pretrained model (model.name_or_path), not a new one")
        return self


# ------------------------------------------------------------------------------------------ typed parsing
class _Loader(yaml.SafeLoader):
    """YAML with only true/false as booleans: `save_strategy: no` must stay the string "no" (YAML 1.1 says False)."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


def _yaml(text: str):
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NONE = {"null", "none", "~", ""}


def _coerce(value: Any, tp: Any, key: str, from_cli: bool) -> Any:
    """Turn `value` (from YAML, or a raw string from the command line) into type `tp`, or raise naming `key`."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return _yaml(value) if from_cli and isinstance(value, str) else value
    if origin in (typing.Union, types.UnionType):
        members = typing.get_args(tp)
        if type(None) in members and (value is None or (isinstance(value, str) and value.strip().lower() in _NONE)):
            return None
        # Try the literal and bool members before str, so "auto"/"true" keep their meaning.
        for member in sorted((m for m in members if m is not type(None)), key=lambda m: m is str):
            try:
                return _coerce(value, member, key, from_cli)
            except ValueError:
                continue
        raise ValueError(f"{key}: cannot read {value!r} as {_type_name(tp)}")
    if origin is Literal:
        choices = typing.get_args(tp)
        for c in choices:
            if value == c or (isinstance(value, str) and str(c) == value.strip()):
                return c
        raise ValueError(f"{key}: {value!r} is not one of {list(choices)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ValueError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        try:
            f = float(str(value).replace("_", ""))
        except ValueError:
            raise ValueError(f"{key}: expected an integer, got {value!r}") from None
        if not f.is_integer():
            raise ValueError(f"{key}: expected an integer, got {value!r}")
        return int(f)
    if tp is float:
        if isinstance(value, bool):
            raise ValueError(f"{key}: expected a number, got {value!r}")
        try:
            return float(str(value).replace("_", "")) if isinstance(value, str) else float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{key}: expected a number, got {value!r}") from None
    if tp is str:
        if value is None or isinstance(value, (dict, list)):
            raise ValueError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if origin is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        if from_cli and isinstance(value, str):
            value = _yaml(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise ValueError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]", False) for i, v in enumerate(value)]
    if origin is dict:
        if from_cli and isinstance(value, str):
            value = _yaml(value)
        if not isinstance(value, dict):
            raise ValueError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    raise TypeError(f"{key}: unsupported config type {tp!r}")  # a bug in this module, not bad input


def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")


def _section_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_section(tp: Any) -> bool:
    return dataclasses.is_dataclass(tp)


def _build(cls, data: dict, prefix: str = ""):
    """Build dataclass `cls` from a mapping, recursing into sections; unknown keys raise naming the full key."""
    if not isinstance(data, dict):
        raise ValueError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = _section_types(cls)
    unknown = [k for k in data if k not in hints]
    if unknown:
        raise ValueError(f"unknown config key {prefix + str(unknown[0])!r} (known in "
                         f"{prefix.rstrip('.') or 'the top level'}: {', '.join(sorted(hints))})")
    kwargs = {}
    for k, v in data.items():
        tp = hints[k]
        kwargs[k] = _build(tp, v or {}, f"{prefix}{k}.") if _is_section(tp) else _coerce(v, tp, prefix + k, False)
    return cls(**kwargs)


def _deep_merge(base: dict, child: dict) -> dict:
    out = dict(base)
    for k, v in child.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ValueError(f"{path}: `base` files form a cycle")
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        data = _yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the config must be a mapping of sections")
    base = data.pop("base", None)
    if base:
        data = _deep_merge(_read_yaml(path.parent / base, seen + (path,)), data)
    return data


def resolve_config_path(name: str | Path) -> Path:
    """A path as given, or `configs/NAME.yaml` when given a bare preset name."""
    p = Path(name)
    if p.is_file() or p.suffix:
        return p
    return Path("configs") / f"{name}.yaml"


def apply_override(data: dict, item: str) -> dict:
    """Apply one `dotted.key=value` override to the raw config mapping (typed later, by `_build`)."""
    if "=" not in item:
        raise ValueError(f"override {item!r}: expected key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if not all(parts):
        raise ValueError(f"override {item!r}: empty part in key {key!r}")
    # Walk the typed structure so the raw string is parsed with the type of the field it sets.
    cls, node = TrainConfig, data
    for depth, part in enumerate(parts):
        path = ".".join(parts[: depth + 1])
        if cls is None:  # inside a free-form mapping (e.g. model.architecture): YAML-typed values
            if depth == len(parts) - 1:
                node[part] = _yaml(raw) if raw.strip() else None
            else:
                node = node.setdefault(part, {})
            continue
        hints = _section_types(cls)
        if part not in hints:
            raise ValueError(f"unknown config key {path!r} (known in {'.'.join(parts[:depth]) or 'the top level'}: "
                             f"{', '.join(sorted(hints))})")
        tp = hints[part]
        if depth == len(parts) - 1:
            if _is_section(tp):
                raise ValueError(f"override {item!r}: {path!r} is a section; set one of its keys")
            node[part] = _coerce(raw, tp, path, True)
        elif _is_section(tp):
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node, cls = node[part], tp
        elif typing.get_origin(tp) in (dict, typing.Union, types.UnionType) and _allows_dict(tp):
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node, cls = node[part], None
        else:
            raise ValueError(f"override {item!r}: {path!r} is a {_type_name(tp)}, it has no sub-keys")
    return data


def _allows_dict(tp: Any) -> bool:
    if typing.get_origin(tp) is dict:
        return True
    return any(typing.get_origin(m) is dict for m in typing.get_args(tp))


def load_config(path: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> TrainConfig:
    """Read a YAML config (following `base:`), apply `key=value` overrides, type-check and validate it."""
    data = _read_yaml(resolve_config_path(path)) if path is not None else {}
    for item in overrides:
        data = apply_override(data, item)
    return _build(TrainConfig, data).resolve_placeholders().validate()


def config_from_dict(data: dict) -> TrainConfig:
    """Build and validate a config from a plain mapping (the same typing rules as a file)."""
    return _build(TrainConfig, data).resolve_placeholders().validate()
