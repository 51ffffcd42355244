"""`benchmarks/countdown_gpu/ratio_floor.py`: the wall-clock ratio taken apart, from summaries that
`benchmarks/trace_steps.py`'s own `summarize` writes (synthetic passes, no model)."""

from __future__ import annotations

import json

import pytest


def _trace(load_benchmark, passes, solves, wall):
    """trace_steps' stdout for synthetic passes: (start, end, kind, B, tokens, launched), seconds."""
    trace = load_benchmark("benchmarks/trace_steps.py")
    summary = trace.summarize(passes, solves, wall)
    settings = {"model": "m", "warmup": {"graphs": 3}}
    return "Loading weights: 100%\n" + json.dumps(settings) + "\n" + json.dumps(summary, indent=1) + "\n  ncalls\n"


def _passes(kinds_ms, gap_ms, launch_ms):
    """Back-to-back passes of (kind, B, ms), `gap_ms` of host time between them, `launch_ms` of host work in each."""
    out, t = [], 0.0
    for kind, b, ms in kinds_ms:
        out.append((t, t + ms / 1000, kind, b, b, t + launch_ms / 1000))
        t += (ms + gap_ms) / 1000
    return out


def test_lines_remove_host_then_launch_then_the_rows_cost(tmp_path, load_benchmark, capsys):
    mod = load_benchmark("benchmarks/countdown_gpu/ratio_floor.py")
    # SPRINT: 2 decode passes of 3 ms at 6 rows and a 1 ms join, 1 ms between passes, 0.5 ms launch work each.
    sprint = _passes([("decode x8", 6, 3.0), ("join 8", 6, 1.0), ("decode x8", 6, 3.0)], 1.0, 0.5)
    # Sequential: 4 decode passes of 2 ms at one row, 0.5 ms between, 0.5 ms launch work each.
    seq = _passes([("decode x8", 1, 2.0)] * 4, 0.5, 0.5)
    (tmp_path / "a.txt").write_text(_trace(load_benchmark, sprint, 1, 0.010))
    (tmp_path / "b.txt").write_text(_trace(load_benchmark, seq, 1, 0.0095))

    a = mod.pool([mod.read_summary((tmp_path / "a.txt").read_text())])
    b = mod.pool([mod.read_summary((tmp_path / "b.txt").read_text())])
    assert (a.pass_ms, a.launch_ms, a.between_ms, a.decode_passes) == pytest.approx((7.0, 1.5, 2.0, 2.0))
    assert a.decode_device_ms_per_pass == pytest.approx(2.5)
    assert b.decode_device_ms_per_pass == pytest.approx(1.5)
    lines = dict(mod.floor_lines(a, b))
    assert lines["wall"] == pytest.approx(10.0 / 9.5)
    assert lines["passes"] == pytest.approx(7.0 / 8.0)
    assert lines["device"] == pytest.approx(5.5 / 6.0)
    # Each SPRINT decode pass at the sequential pass's 1.5 ms: 5.5 - 2 x 1.0 = 3.5 ms of device.
    assert lines["one-row cost"] == pytest.approx(3.5 / 6.0)

    assert mod.main(["--sprint", str(tmp_path / "a.txt"), "--sequential", str(tmp_path / "b.txt")]) == 0
    out = capsys.readouterr().out
    assert "| one-row cost | 0.583 |" in out and "| wall | 1.053 |" in out


def test_traces_pool_weighted_by_their_solves(load_benchmark):
    mod = load_benchmark("benchmarks/countdown_gpu/ratio_floor.py")
    one = {"solves": 1, "wall_ms_per_solve": 10.0, "between_ms_per_solve": 1.0,
           "kinds": {"decode x8": {"passes_per_solve": 2.0, "ms_per_solve": 4.0, "launch_ms_per_pass": 0.5}}}
    three = {"solves": 3, "wall_ms_per_solve": 20.0, "between_ms_per_solve": 3.0,
             "kinds": {"decode x8": {"passes_per_solve": 4.0, "ms_per_solve": 8.0, "launch_ms_per_pass": 0.25}}}
    p = mod.pool([one, three])
    assert p.solves == 4
    assert (p.wall_ms, p.between_ms, p.pass_ms, p.decode_passes) == pytest.approx((17.5, 2.5, 7.0, 3.5))
    assert p.launch_ms == pytest.approx((1.0 + 3 * 1.0) / 4)


def test_bad_input_is_named(tmp_path, load_benchmark, capsys):
    mod = load_benchmark("benchmarks/countdown_gpu/ratio_floor.py")
    bad = tmp_path / "progress_only.txt"
    bad.write_text('Loading\n{"model": "m"}\n10/100 problems\n')
    with pytest.raises(ValueError, match="progress_only.txt: no trace_steps summary"):
        mod.read_summary(bad.read_text(), str(bad))
    assert mod.main(["--sprint", str(bad), "--sequential", str(bad)]) == 2
    assert "no trace_steps summary" in capsys.readouterr().err
    with pytest.raises(ValueError, match="no traces"):
        mod.pool([])
