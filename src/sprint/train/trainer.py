"""Build and run TRL's SFTTrainer from a `TrainConfig`, and save a standard Hugging Face model directory.

Layout of `training.output_dir` after a run:
    config.json, model weights, tokenizer files   the final model (the best checkpoint by eval loss when evaluating),
                                                  loadable with AutoModelForCausalLM, vLLM or SGLang
    train_config.yaml                             the resolved configuration
    train_metrics.json                            data statistics, trainer metrics, token throughput, log history
    checkpoints/checkpoint-N/                     intermediate checkpoints (HF format too)
    adapter/                                      the LoRA adapter, when LoRA is on

The model is either fine-tuned from `model.name_or_path` (`from_pretrained`, hub id or local dir) or built from
scratch from `model.architecture` with the tokenizer in `model.tokenizer` (the Countdown models). The tokenized
dataset comes from `sprint.train.data`, which keeps the loss on the completion only.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from transformers import TrainerCallback

from sprint.train.config import TrainConfig
from sprint.train.data import PreparedData, prepare_data

CHECKPOINT_SUBDIR = "checkpoints"
CONFIG_FILE = "train_config.yaml"
METRICS_FILE = "train_metrics.json"


@dataclass
class TrainResult:
    """What a run produced: where the model is (None for a dry run) and its metrics (also written to disk)."""

    output_dir: Path | None
    metrics: dict = field(default_factory=dict)
    main_process: bool = True  # False on the other ranks of a multi-process run (they should stay quiet)


def is_main_process() -> bool:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0) == 0


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def resolve_bf16(setting) -> bool:
    """`auto`: bf16 exactly when a CUDA GPU that supports it is present."""
    if setting != "auto":
        return bool(setting)
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def _torch_dtype(name: str | None, key: str):
    import torch

    if name is None or name == "auto":
        return name
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"{key}: unknown dtype {name!r} (use float32, bfloat16, float16 or auto)")
    return dtype


def check_files(cfg: TrainConfig) -> None:
    """Fail before loading anything when a file the config names is missing (errors name the key)."""
    for key, value in (("data.train", cfg.data.train), ("data.eval", cfg.data.eval),
                       ("training.deepspeed", cfg.training.deepspeed)):
        if value and not Path(value).is_file():
            raise FileNotFoundError(f"{key}: file not found: {value}")


def load_tokenizer(cfg: TrainConfig):
    """The tokenizer named by `model.tokenizer` (or the model's own); a missing pad token falls back to EOS."""
    from transformers import AutoTokenizer

    name = cfg.model.tokenizer or cfg.model.name_or_path
    tok = AutoTokenizer.from_pretrained(name, trust_remote_code=cfg.model.trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def build_model(cfg: TrainConfig, tokenizer):
    """Load the pretrained model, or create a new one from `model.architecture` sized for the tokenizer.

    Must run after the SFTConfig exists: under DeepSpeed ZeRO-3 that object is what makes `from_pretrained`
    partition the weights while loading instead of materialising the whole model on every GPU.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, set_seed

    m = cfg.model
    dtype = _torch_dtype(m.dtype, "model.dtype")
    kwargs = {"trust_remote_code": m.trust_remote_code}
    if m.attn_implementation:
        kwargs["attn_implementation"] = m.attn_implementation
    if m.name_or_path:
        return AutoModelForCausalLM.from_pretrained(m.name_or_path, dtype=dtype, **kwargs)
    arch = dict(m.architecture)
    model_type = arch.pop("model_type")
    for key in ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id"):
        if key in arch:
            raise ValueError(f"model.architecture.{key}: taken from the tokenizer, do not set it")
    try:
        config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                                      **arch)
    except (ValueError, TypeError) as e:
        raise ValueError(f"model.architecture: {e}") from None
    set_seed(cfg.training.seed)  # same seed, same initial weights: the two Countdown models start alike
    model = AutoModelForCausalLM.from_config(config, **kwargs)
    if dtype not in (None, "auto"):
        model = model.to(dtype)
    return model


def lora_config(cfg: TrainConfig):
    if not cfg.lora.enabled:
        return None
    from peft import LoraConfig

    lc = cfg.lora
    return LoraConfig(r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout, target_modules=list(lc.target_modules),
                      task_type="CAUSAL_LM")


def plan_steps(cfg: TrainConfig, data: PreparedData, n_processes: int | None = None) -> dict:
    """Steps per epoch and, for a token budget, the step count that spends it (used for the LR schedule)."""
    t = cfg.training
    n_processes = n_processes or world_size()
    global_batch = t.per_device_train_batch_size * t.gradient_accumulation_steps * n_processes
    n = len(data.train)
    steps_per_epoch = max(1, math.ceil(n / global_batch))
    # From the `length` column, one Arrow read: `data.train["input_ids"]` would turn every token of the data set into
    # a Python int (2 s for 67k samples, and gigabytes at 500k).
    tokens_per_epoch = sum(min(k, cfg.data.max_length) for k in data.lengths("train"))
    plan = {"global_batch_size": global_batch, "steps_per_epoch": steps_per_epoch,
            "tokens_per_epoch": tokens_per_epoch}
    if t.max_tokens_budget is not None:
        mean_len = tokens_per_epoch / n
        plan["max_steps"] = max(1, math.ceil(t.max_tokens_budget / (mean_len * global_batch)))
        plan["epochs"] = t.max_tokens_budget / tokens_per_epoch
    elif t.max_steps > 0:
        plan["max_steps"] = t.max_steps
    else:
        plan["max_steps"] = math.ceil(steps_per_epoch * t.num_train_epochs)
    return plan


def build_sft_config(cfg: TrainConfig, data: PreparedData, *, progress: bool = True):
    """Map the TrainConfig onto TRL's SFTConfig (argument names as in trl 1.x / transformers 5)."""
    from trl import SFTConfig

    t = cfg.training
    has_eval = data.eval is not None
    plan = plan_steps(cfg, data)
    kwargs = dict(
        output_dir=str(Path(t.output_dir) / CHECKPOINT_SUBDIR),
        num_train_epochs=t.num_train_epochs,
        max_steps=plan["max_steps"] if t.max_tokens_budget is not None else t.max_steps,
        per_device_train_batch_size=t.per_device_train_batch_size,
        per_device_eval_batch_size=t.per_device_eval_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        # transformers 5 reads a float below 1 as a fraction of the total steps (warmup_ratio is gone).
        warmup_steps=t.warmup_ratio,
        lr_scheduler_type=t.lr_scheduler_type,
        max_grad_norm=t.max_grad_norm,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        seed=t.seed,
        data_seed=t.seed,
        bf16=resolve_bf16(t.bf16),
        fp16=False,
        gradient_checkpointing=t.gradient_checkpointing,
        dataloader_pin_memory=_cuda_available(),
        # Without an accelerator, say so: only then do several processes (torchrun) form a CPU process group.
        use_cpu=not (_cuda_available() or _mps_available()),
        ddp_find_unused_parameters=False,  # every weight of a causal LM takes part in each step
        deepspeed=t.deepspeed,
        report_to=t.report_to,
        save_total_limit=t.save_total_limit,
        # Tokenized by sprint.train.data; TRL builds labels from completion_mask and truncates at max_length.
        max_length=cfg.data.max_length,
        completion_only_loss=True,
        packing=False,
        include_num_input_tokens_seen="non_padding",
        disable_tqdm=not progress,
    )
    if has_eval and t.eval_steps:
        kwargs.update(eval_strategy="steps", eval_steps=t.eval_steps, save_strategy="steps",
                      save_steps=t.save_steps or t.eval_steps)
    elif has_eval:
        kwargs.update(eval_strategy="epoch", save_strategy="epoch")
    else:
        kwargs.update(eval_strategy="no", save_strategy="steps", save_steps=t.save_steps or 500)
    if has_eval and t.load_best_model_at_end:
        kwargs.update(load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False)
    known = {f.name for f in dataclasses.fields(SFTConfig)}
    if "activation_checkpointing" in known:  # transformers >= 5 renamed it; set both so neither warns nor differs
        kwargs["activation_checkpointing"] = t.gradient_checkpointing
    for key in t.sft:
        if key not in known:
            raise ValueError(f"training.sft.{key}: not an SFTConfig argument")
    kwargs.update(t.sft)
    # TRL's preparation of an already tokenized dataset is three single-process `map`s over every token (labels from
    # the completion mask, truncation, a filter for fully masked samples): 46-67 s for 67k samples (48M tokens) on a
    # 2-CPU machine, more than tokenizing. sprint.train.data already wrote the labels; when no sample is longer than
    # max_length the truncation and the filter change nothing (every sample has its EOS label), so the preparation is
    # skipped. Otherwise (data.on_overflow=truncate with longer samples, packing, shuffle_dataset) TRL prepares the
    # data, without the label map (19 s there; training.sft.dataset_num_proc=2 did not shorten it on 2 CPUs).
    if "dataset_kwargs" not in t.sft and data.fits(cfg.data.max_length) and not kwargs.get("packing") \
            and not kwargs.get("shuffle_dataset"):
        kwargs["dataset_kwargs"] = {"skip_prepare_dataset": True}
    return SFTConfig(**kwargs)


class TokenBudgetCallback(TrainerCallback):
    """Stops training once `budget` non-padding input tokens have been seen (summed over all processes)."""

    def __init__(self, budget: int):
        self.budget = budget

    def on_step_end(self, args, state, control, **kwargs):
        if state.num_input_tokens_seen >= self.budget:
            control.should_training_stop = True
        return control


class ThroughputCallback(TrainerCallback):
    """Times optimizer steps to report steady-state training tokens/s.

    The first `skip_steps` steps (allocation, kernel selection, compilation) are not counted, nor is any step that an
    evaluation interrupted.
    """

    def __init__(self, skip_steps: int = 1):
        self.skip_steps = max(1, skip_steps)
        self.marks: list[tuple[float, int, int]] = []  # (time, global step, tokens seen); NaN time = evaluation

    def on_step_end(self, args, state, control, **kwargs):
        self.marks.append((time.perf_counter(), state.global_step, state.num_input_tokens_seen))
        return control

    def on_evaluate(self, args, state, control, **kwargs):
        self.marks.append((math.nan, state.global_step, state.num_input_tokens_seen))
        return control

    def summary(self) -> dict:
        seconds = tokens = steps = 0
        marks = [m for m in self.marks if m[1] >= self.skip_steps]  # the clock starts at the end of step skip_steps
        for prev, cur in zip(marks, marks[1:]):
            if not (math.isnan(prev[0]) or math.isnan(cur[0])):
                seconds += cur[0] - prev[0]
                steps += cur[1] - prev[1]
                tokens += cur[2] - prev[2]
        if seconds <= 0 or steps == 0:
            return {}
        return {"steady_tokens_per_second": tokens / seconds, "steady_steps_per_second": steps / seconds,
                "steady_steps_measured": steps, "steady_tokens_measured": tokens}


def _sft_trainer_class():
    """SFTTrainer whose length-grouped samplers take the dataset's `length` column, and whose training loss weights
    the answer tokens when the batch carries `loss_weights` (data.answer_loss_weight != 1).

    transformers' Trainer drops every column the model does not take before it builds the sampler, so a `length`
    column never reaches it, and LengthGroupedSampler then reads every sample's input_ids (4-5 s for 67k samples).
    Even a kept column would come as a lazy datasets Column, indexed one row at a time by the sampler at every epoch.
    Here the column is kept (the collator ignores it) and handed to the sampler as a list read in one Arrow call.
    """
    from transformers.trainer_pt_utils import LengthGroupedSampler
    from trl import SFTTrainer

    from sprint.train.data import column_values
    from sprint.train.weights import ANSWER_COLUMNS, LOSS_WEIGHTS, weighted_loss

    class SprintSFTTrainer(SFTTrainer):
        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            from sprint.train.branches import MASK_COLUMNS

            # Besides `length`: merged executor branches' mask columns, the answer mask for the weight collator.
            for name in (self.args.length_column_name, *MASK_COLUMNS, *ANSWER_COLUMNS):
                if self._signature_columns is not None and name not in self._signature_columns:
                    self._signature_columns = [*self._signature_columns, name]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            weights = inputs.pop(LOSS_WEIGHTS, None)
            # Evaluation keeps the plain loss, so eval_loss (and the best checkpoint picked on it) compares with runs
            # at any other weight.
            if weights is None or not self.model.training:
                return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                            num_items_in_batch=num_items_in_batch)
            return self._weighted_loss(model, inputs, weights, return_outputs, num_items_in_batch)

        def _weighted_loss(self, model, inputs, weights, return_outputs, num_items_in_batch):
            """TRL's own loss path (SFTTrainer.compute_loss with the fused LM head, trl 1.16), with each token's
            loss scaled by its weight; the same normalisation and metrics. The variants that path does not cover
            are refused rather than silently trained unweighted."""
            import torch

            pc = getattr(self.accelerator, "parallelism_config", None)
            if self.compute_loss_func is not None or self.label_smoother is not None or self.aux_loss_enabled or (
                    pc is not None and getattr(pc, "sp_enabled", False)):
                raise ValueError("data.answer_loss_weight: not supported with a custom compute_loss_func, label "
                                 "smoothing, a MoE auxiliary loss or sequence parallelism")
            inputs["use_cache"] = False
            outputs = model(**inputs, fused_lm_head=True)
            per_token = -outputs.log_probs  # zero where the label is -100
            if self.args.loss_type == "dft":
                per_token = per_token * outputs.log_probs.exp().detach()
            loss = weighted_loss(per_token, weights, num_items_in_batch, outputs.label_mask)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                # As TRL and Trainer: num_items_in_batch counts every rank's tokens and DDP averages the gradients.
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
            self._log_token_metrics(outputs, inputs)
            if return_outputs:  # the fused head builds no logits; as TRL, recompute them
                with torch.no_grad():
                    outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
            return (loss, outputs) if return_outputs else loss

        def _log_token_metrics(self, outputs, inputs):
            """TRL's training metrics (entropy, mean_token_accuracy, num_tokens), unweighted."""
            gather = self.accelerator.gather_for_metrics
            metrics = self._metrics["train"]
            n = gather(outputs.label_mask.sum()).sum()
            for name, per_token in (("entropy", outputs.entropy), ("mean_token_accuracy", outputs.is_top1)):
                total = gather(per_token.detach().sum()).sum()
                metrics[name].append((total / n).item() if n > 0 else 0.0)
            self._total_train_tokens += gather(inputs["attention_mask"].sum()).sum().item() // self._tp_size
            metrics["num_tokens"] = [self._total_train_tokens]

        def _with_listed_lengths(self, sampler, dataset):
            if isinstance(sampler, LengthGroupedSampler) and not isinstance(sampler.lengths, list):
                sampler.lengths = column_values(dataset, self.args.length_column_name)
            return sampler

        def _get_train_sampler(self, train_dataset=None):
            dataset = self.train_dataset if train_dataset is None else train_dataset
            return self._with_listed_lengths(super()._get_train_sampler(train_dataset), dataset)

        def _get_eval_sampler(self, eval_dataset):
            return self._with_listed_lengths(super()._get_eval_sampler(eval_dataset), eval_dataset)

    return SprintSFTTrainer


def build_trainer(cfg: TrainConfig, *, tokenizer=None, data: PreparedData | None = None, progress: bool = True,
                  callbacks: list | None = None, timings: dict | None = None):
    """Tokenizer, data, SFTConfig, model and SFTTrainer, in the order DeepSpeed needs. Returns (trainer, data).
    `timings`, when given, receives the seconds each setup phase took (on a rented GPU, setup is paid for too):
    data_s (with its parts read_s, tokenize_s, dataset_s when the data is prepared here) and trainer_s."""
    import time

    start = time.perf_counter()
    timings = {} if timings is None else timings
    check_files(cfg)
    tokenizer = tokenizer or load_tokenizer(cfg)
    if data is None:
        data = prepare_data(cfg, tokenizer, progress=progress and is_main_process())
        timings.update(data.timings)
    timings["data_s"] = round(time.perf_counter() - start, 2)
    args = build_sft_config(cfg, data, progress=progress)
    model = build_model(cfg, tokenizer)
    cbs = list(callbacks or [])
    if cfg.training.max_tokens_budget is not None:
        cbs.append(TokenBudgetCallback(cfg.training.max_tokens_budget))
    extra = {}
    if cfg.data.executor_branches:
        # Merged sequences (sprint.train.branches): our collator pads the mask columns, and a hook on the model
        # turns them into the tree mask on the device, so the batch keeps a 2D mask for counting tokens.
        from sprint.train.branches import BranchCollator, tree_attention_hook

        extra["data_collator"] = BranchCollator(tokenizer.pad_token_id)   # load_tokenizer set one
    trainer = _sft_trainer_class()(model=model, args=args, train_dataset=data.train, eval_dataset=data.eval,
                                   processing_class=tokenizer, peft_config=lora_config(cfg), callbacks=cbs, **extra)
    if cfg.data.answer_loss_weight != 1.0:
        # Wraps whatever collator TRL chose (it pads, we add `loss_weights`), which the trainer's loss then pops.
        from sprint.train.weights import AnswerWeightCollator

        trainer.data_collator = AnswerWeightCollator(trainer.data_collator, cfg.data.answer_loss_weight)
    if cfg.data.executor_branches:
        # On the module the trainer calls (the PEFT wrapper under LoRA; DDP, added later, calls it too), so no
        # wrapper can skip it: without the hook the model would ignore the mask columns silently.
        flex = cfg.model.attn_implementation == "flex_attention"   # a BlockMask instead of the dense mask
        trainer.model.register_forward_pre_hook(functools.partial(tree_attention_hook, flex=flex), with_kwargs=True)
    timings["trainer_s"] = round(time.perf_counter() - start - timings["data_s"], 2)
    return trainer, data


def dry_run(cfg: TrainConfig, *, progress: bool = True, log: Callable[[str], None] = print) -> TrainResult:
    """Build and tokenize the dataset, report lengths and how many samples max_length would cut; train nothing."""
    check_files(cfg)
    tokenizer = load_tokenizer(cfg)
    data = prepare_data(cfg, tokenizer, progress=progress)
    plan = plan_steps(cfg, data)
    log(data.report())
    log(f"plan: global batch {plan['global_batch_size']}, {plan['steps_per_epoch']} steps/epoch, "
        f"{plan['tokens_per_epoch']} tokens/epoch, {plan['max_steps']} optimizer steps")
    return TrainResult(output_dir=None, metrics={"data": _data_metrics(data), "plan": plan})


def _data_metrics(data: PreparedData) -> dict:
    metrics = {"train": data.train_stats.to_dict(),
               "eval": data.eval_stats.to_dict() if data.eval_stats else None,
               "dropped_over_max_length": data.dropped}
    if data.answer_spans is not None:
        metrics["answer_spans"] = data.answer_spans
    return metrics


def train(cfg: TrainConfig, *, progress: bool = True, log: Callable[[str], None] = print) -> TrainResult:
    """Run one training and save the final model, its tokenizer, the resolved config and the metrics."""
    out = Path(cfg.training.output_dir)
    throughput = ThroughputCallback()
    setup: dict = {}
    trainer, data = build_trainer(cfg, progress=progress, callbacks=[throughput], timings=setup)
    main = trainer.is_world_process_zero()
    if main:
        log(data.report())
        procs = f" on {data.num_proc} processes" if data.num_proc > 1 else ""
        parts = ", ".join(f"{k[:-2]} {setup[k]:.1f} s" + (procs if k == "tokenize_s" else "")
                          for k in ("read_s", "tokenize_s", "dataset_s") if k in setup)
        log(f"setup: data {setup['data_s']:.1f} s" + (f" ({parts})" if parts else "")
            + f", trainer {setup['trainer_s']:.1f} s (model + SFTTrainer)")
    result = trainer.train(resume_from_checkpoint=cfg.training.resume_from_checkpoint)
    tokens_seen = trainer.state.num_input_tokens_seen
    runtime = result.metrics.get("train_runtime") or 0.0
    metrics = {"train": dict(result.metrics), "global_step": result.global_step, "num_input_tokens_seen": tokens_seen,
               "train_tokens_per_second": tokens_seen / runtime if runtime else None, **throughput.summary(),
               "best_model_checkpoint": trainer.state.best_model_checkpoint,
               "best_eval_loss": trainer.state.best_metric, "plan": plan_steps(cfg, data),
               "data": _data_metrics(data), "device": _device_name(), "setup_seconds": setup}
    if data.eval is not None:
        metrics["final_eval"] = trainer.evaluate()
    _save_final(cfg, trainer, out)
    metrics["log_history"] = trainer.state.log_history
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / CONFIG_FILE).write_text(cfg.to_yaml(), encoding="utf-8")
        (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2, default=str), encoding="utf-8")
    return TrainResult(output_dir=out, metrics=metrics, main_process=main)


def _save_final(cfg: TrainConfig, trainer, out: Path) -> None:
    """Save the final (best) model and tokenizer in Hugging Face format; merge LoRA adapters when asked."""
    tokenizer = trainer.processing_class
    if cfg.lora.enabled:
        trainer.save_model(str(out / "adapter"))
        if not cfg.lora.merge or cfg.training.deepspeed:
            # Under ZeRO-3 the base weights are sharded across processes; merge offline from the adapter instead.
            return
        model = trainer.model.merge_and_unload()
    else:
        model = trainer.model
    if cfg.training.save_dtype and not cfg.training.deepspeed:
        model = model.to(_torch_dtype(cfg.training.save_dtype, "training.save_dtype"))
    if cfg.lora.enabled:
        if trainer.is_world_process_zero():
            model.save_pretrained(str(out))
            tokenizer.save_pretrained(str(out))
    else:
        trainer.model = model
        trainer.save_model(str(out))  # gathers ZeRO-3 shards; writes the tokenizer too


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _mps_available() -> bool:
    import torch

    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def _device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return f"cpu ({os.cpu_count()} cores visible, {torch.get_num_threads()} torch threads)"


def run_training(config: str | Path, overrides=(), *, dry: bool = False, progress: bool = True,
                 log: Callable[[str], None] = print) -> TrainResult:
    """Load a config file with overrides and either train or (`dry`) only report on the data."""
    from sprint.train.config import load_config

    cfg = load_config(config, overrides)
    return dry_run(cfg, progress=progress, log=log) if dry else train(cfg, progress=progress, log=log)
