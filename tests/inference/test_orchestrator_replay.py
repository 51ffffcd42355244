"""Replaying the paper's released trajectories through the orchestrator reproduces them byte for byte."""

from __future__ import annotations

import asyncio

from sprint.backends.base import ScriptedBackend
from sprint.format import parse, render
from sprint.inference import SprintConfig, solve
from sprint.testing.replay import replay_model


def test_orchestrator_reproduces_reference_trajectories(shared_dir):
    files = sorted((shared_dir / "fixtures" / "sprint_reference" / "math500_sprint").glob("*.txt"))
    replayed = 0
    for path in files:
        ref = parse(path.read_text())
        if not ref.ok or ref.preamble:
            continue
        backend = ScriptedBackend(replay_model(ref), chunk=7)
        r = asyncio.run(solve(ref.question, backend, SprintConfig(max_stages=len(ref.stages) + 2)))
        assert r.trajectory == render(ref), path.name
        assert not r.repairs, (path.name, r.repairs)
        assert r.stages == len(ref.stages)
        replayed += 1
    assert replayed >= 90
