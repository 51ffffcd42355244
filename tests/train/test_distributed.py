"""Integration: `sprint train` under torchrun with two processes (CPU, gloo): the data-parallel path docs/training.md
gives for several GPUs, on a tiny real Llama and real Countdown records (SPRINT records as merged executor branches
with the answer weight, the heaviest option set), against the same run in one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def countdown(tmp_path_factory):
    from sprint.testing.tiny import build_tiny_countdown, build_tiny_llama

    d = tmp_path_factory.mktemp("cd")
    tok = build_tiny_countdown(d, train=12, val=2, test=1)
    build_tiny_llama(d / "model", tok, hidden_size=32, layers=2, heads=4, kv_heads=2, intermediate_size=64,
                     max_position_embeddings=8192)
    return d


def _train(countdown, out, nproc: int, budget: int):
    config = out.parent / f"{out.name}.yaml"
    config.write_text(f"name: ddp-test\nmodel:\n  name_or_path: {countdown / 'model'}\n"
                      f"data:\n  train: {countdown / 'sprint_train.jsonl'}\n")
    args = ["-m", "sprint.cli", "train", "--config", str(config), "--no-progress",
            f"data.eval={countdown / 'sprint_val.jsonl'}", "data.format=sprint", "data.executor_branches=true",
            "data.max_length=8192", "data.answer_loss_weight=5", r"data.answer_loss_pattern=Solution (\S+)",
            f"training.output_dir={out}", "training.report_to=none",
            "training.per_device_train_batch_size=2", "training.gradient_accumulation_steps=1",
            f"training.max_tokens_budget={budget}", "training.logging_steps=1", "training.eval_steps=1000",
            "training.learning_rate=1e-2", "training.sft.dataloader_num_workers=0", "data.num_proc=1"]
    if nproc > 1:
        args = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr, json.loads((out / "train_metrics.json").read_text())


def test_two_processes_share_the_token_budget_and_save_one_model(countdown, tmp_path):
    """Two ranks train on different batches, the token budget counts both ranks' tokens (so it is spent in about
    half the optimizer steps of one process), the loss goes down, and one model is written (by rank 0)."""
    budget = 60_000
    log2, m2 = _train(countdown, tmp_path / "ddp", 2, budget)
    log1, m1 = _train(countdown, tmp_path / "one", 1, budget)
    # The budget ends training, or the step count planned from the mean sample length does, near the budget.
    assert m2["num_input_tokens_seen"] >= 0.9 * budget and m1["num_input_tokens_seen"] >= 0.9 * budget
    # Each optimizer step of two ranks sees about twice the tokens of one process's step.
    assert m2["global_step"] < 0.75 * m1["global_step"], (m1["global_step"], m2["global_step"])
    assert log2.count("model saved to") == 1   # one rank reports and writes
    assert (tmp_path / "ddp" / "model.safetensors").is_file()
    losses = [float(x.split("'loss': '")[1].split("'")[0]) for x in log2.splitlines() if "'loss': '" in x]
    assert len(losses) >= 3 and losses[-1] < losses[0]
