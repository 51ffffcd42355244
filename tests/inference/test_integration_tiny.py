"""Integration: the orchestrator and the baselines on the real in-process backend with a tiny random Llama.

Random weights write nonsense, which is the point: whatever comes out, the run must finish, record its repairs and
produce a trajectory that parses cleanly."""

from __future__ import annotations

import asyncio

import pytest

from sprint.format import parse
from sprint.inference import SprintConfig, solve
from sprint.inference.baselines import BaselineConfig, solve_sequential, solve_skeleton_of_thought

tb = pytest.importorskip("sprint.backends.transformers_backend")

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def backend(tiny_llama_dir):
    return tb.TransformersBackend(str(tiny_llama_dir), device="cpu", max_batch=4)


def test_sprint_on_tiny_random_llama_completes_with_parseable_trajectory(backend):
    cfg = SprintConfig(max_stages=3, max_plan_tokens=40, max_exec_tokens=12, max_answer_tokens=12,
                       retry_backoff_s=0.0)
    r = asyncio.run(solve("What is 2 + 3?", backend, cfg, tokenizer=backend.tokenizer, id="tiny"))
    traj = parse(r.trajectory)
    assert traj.ok, traj.diagnostics
    assert traj.final_answer is not None and r.stages == len(traj.stages)
    assert r.repairs, "a random model never writes a well-formed run"
    kinds = {x["kind"] for x in r.repairs}
    assert "forced_final_answer" in kinds or "cut_at_max_tokens" in kinds
    for c in r.calls:
        assert c.error is None and c.end_s >= c.start_s and c.prompt_tokens > 0
    # Token counts come from the backend's own completion records.
    assert r.generated_tokens == sum(c.generated_tokens for c in r.calls) > 0


def test_sprint_eager_executors_run_on_the_real_backend(backend):
    """A random planner rarely writes prompts, so the planner is scripted here while the executors really decode
    on the tiny model, side by side in one batch."""
    from sprint.testing.scripted import ScriptedSprintModel

    class Hybrid:
        """Scripted planner, real backend for the executors."""

        def __init__(self):
            self.model = ScriptedSprintModel(["Plan.\n<prompt_1.1> a </prompt_1.1>\n<prompt_1.2> b </prompt_1.2>\n"
                                              "<prompt_1.3> c </prompt_1.3>\n</Plan_1>",
                                              "<Final_answer>\n\\boxed{5}\n</Final_answer>"], {})
            self.count_tokens = backend.count_tokens

        def stream(self, prompt, params):
            from sprint.testing.scripted import call_kind
            from sprint.backends.base import ScriptedBackend

            if call_kind(prompt)[0] == "executor":
                return backend.stream(prompt, params)
            return ScriptedBackend(self.model).stream(prompt, params)

        async def generate(self, prompt, params):  # pragma: no cover - the orchestrator streams
            raise NotImplementedError

    before = backend.stats.max_sequences_in_step
    r = asyncio.run(solve("What is 2 + 3?", Hybrid(), SprintConfig(max_exec_tokens=16)))
    ex = [c for c in r.calls if c.role == "executor"]
    assert [c.prompt_id for c in ex] == ["1.1", "1.2", "1.3"]
    assert all(c.generated_tokens > 0 and c.error is None for c in ex)
    assert backend.stats.max_sequences_in_step >= max(before, 2)  # executors decoded side by side
    assert parse(r.trajectory).ok and r.answer == "5"


def test_baselines_on_tiny_random_llama(backend):
    cfg = BaselineConfig(max_tokens=16, skeleton_max_tokens=16, point_max_tokens=8, answer_max_tokens=8,
                         max_points=3)
    seq = asyncio.run(solve_sequential("What is 2 + 3?", backend, cfg, tokenizer=backend.tokenizer))
    assert seq.calls[0].generated_tokens > 0 and seq.trajectory.startswith("<Question>")
    sot = asyncio.run(solve_skeleton_of_thought("What is 2 + 3?", backend, cfg, tokenizer=backend.tokenizer))
    assert [c.role for c in sot.calls][0] == "skeleton" and sot.calls[-1].role == "answer"
    assert parse(sot.trajectory).final_answer is not None
