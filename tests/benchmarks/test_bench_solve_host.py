"""`benchmarks/bench_solve_host.py`: a replayed solve (the forward pass replaced by the modelled step cost and the
recorded picks) takes the recorded solve's path, token for token, and charges the modelled device time."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def test_a_replayed_solve_writes_the_recorded_trajectory(load_benchmark):
    mod = load_benchmark("benchmarks/bench_solve_host.py")
    from sprint.tasks.countdown.loader import load_countdown

    items = load_countdown("test", 11, 1, question_order="sorted")
    question = items[10].question   # the sequential model solves it in about 110 tokens
    solved = []
    picks = mod.record("sequential", [question], threads=2, results=solved)
    (want,) = solved
    (row,) = mod.replay("sequential", [question], picks, decode_ms=0.5, eager_ms=4.0)
    assert row["trajectory"] == want.trajectory and row["sequential_tokens"] == want.sequential_tokens
    # Every generated token but the first is one decode step; the question's prefill is one eager step.
    assert row["device_s"] == pytest.approx((want.sequential_tokens - 1) * 0.0005 + 0.004, rel=0.05)
    assert row["wall_s"] >= row["device_s"]
    with pytest.raises(RuntimeError, match="left the recorded path"):   # a question it did not record
        mod.replay("sequential", [items[9].question], picks, decode_ms=0.0, eager_ms=0.0)


@pytest.mark.parametrize("method", ["sequential", "sprint"])
def test_multi_step_replays_write_the_recorded_trajectory(load_benchmark, method):
    """Decode passes of four greedy steps (as the CUDA graphs take them): the same trajectory as the one-step
    recording, SPRINT's stop strings inside a block included (each request ends at the token that completes its stop
    string and the steps after it are dropped), with no fewer modelled steps than the one-step replay."""
    mod = load_benchmark("benchmarks/bench_solve_host.py")
    from sprint.tasks.countdown.loader import load_countdown

    question = load_countdown("test", 11, 1, question_order="sorted")[10].question
    solved = []
    picks = mod.record(method, [question], threads=2, results=solved)
    (want,) = solved
    (one,) = mod.replay(method, [question], picks, decode_ms=0.0, eager_ms=0.0)
    (four,) = mod.replay(method, [question], picks, decode_ms=0.5, eager_ms=4.0, decode_steps=4)
    assert one["trajectory"] == four["trajectory"] == want.trajectory
    assert four["sequential_tokens"] == want.sequential_tokens
    if method == "sequential":   # one stream: the question's pass, then its steps rounded up to blocks of four
        steps = want.sequential_tokens
        assert steps * 0.0005 <= four["device_s"] <= (steps + 8) * 0.0005 + 1e-9
