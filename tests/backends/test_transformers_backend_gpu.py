"""TransformersBackend on a CUDA GPU: the fast path there computes the same model as the exact path on the CPU.

Skipped without a GPU (CI has none); run on a GPU machine with `python -m pytest -q -m gpu`.
"""

from __future__ import annotations

import asyncio

import pytest

torch = pytest.importorskip("torch")

from sprint.backends.base import GenerationParams  # noqa: E402
from sprint.backends.transformers_backend import TransformersBackend  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.integration,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

PROMPTS = ["Let me think step by step.", "The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9",
           ("Okay, so I need to find x. If 2^8 = 4^x then x = 4. Let me think step by step. First, compute 2 + 3 = 5. "
            "Then 5 * 4 = 20. So the answer is 20. ") * 3]


class LogitLog:
    """Records (token ids so far, next-token logits) for every sampled token."""

    def __init__(self):
        self.seen: dict[tuple[int, ...], object] = {}

    def __call__(self, tokens, logits):
        self.seen[tuple(tokens)] = logits.detach().float().cpu()


def _generate_all(backend, prompts, max_tokens):
    async def go():
        params = GenerationParams(max_tokens=max_tokens)
        return await asyncio.gather(*(backend.generate(p, params) for p in prompts))
    return asyncio.run(asyncio.wait_for(go(), 120))


def test_cuda_fast_mode_matches_cpu_exact_mode(noisy_llama_dir):
    """float32 on both devices: the GPU's fused kernels may round differently, but only at the 1e-3 level."""
    cpu_log, gpu_log = LogitLog(), LogitLog()
    _generate_all(TransformersBackend(str(noisy_llama_dir), device="cpu", dtype="float32", on_logits=cpu_log),
                  PROMPTS, 8)
    gpu = TransformersBackend(str(noisy_llama_dir), device="cuda", dtype="float32", on_logits=gpu_log)
    assert gpu.device.type == "cuda" and not gpu.exact
    _generate_all(gpu, PROMPTS, 8)
    shared = cpu_log.seen.keys() & gpu_log.seen.keys()
    assert len(shared) >= 8
    for key in shared:
        assert (cpu_log.seen[key] - gpu_log.seen[key]).abs().max() < 1e-2


def test_bundled_countdown_model_gives_the_same_greedy_plan_on_cuda():
    """The bundled SPRINT model's first planner call: the same greedy text on the GPU (its default dtype) as on the
    CPU (float32); a plan is short enough that bf16 rounding should not flip a greedy choice of this model."""
    from sprint.format import layout
    from sprint.models import resolve_model
    from sprint.tasks.countdown.loader import load_countdown

    path = resolve_model("countdown-sprint")
    item = load_countdown(n=1, seed=1)[0]
    prompt = layout.generation_start(layout.prompt_prefix(item.question, "sprint"))
    cpu = _generate_all(TransformersBackend(path, device="cpu"), [prompt], 48)[0]
    gpu = _generate_all(TransformersBackend(path, device="cuda"), [prompt], 48)[0]
    assert cpu.text.strip() and gpu.text == cpu.text
