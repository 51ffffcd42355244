"""`benchmarks/countdown_gpu/latency_table.py`: wall-clock and token ratios of two runs on the problems both finished
(synthetic results; plain and gzipped files, run folders)."""

from __future__ import annotations

import gzip
import json

import pytest


def _write(path, rows, gz=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def _rec(i, wall, tokens, correct=True, **kw):
    return {"id": f"p{i}", "wall_clock_s": wall, "sequential_tokens": tokens, "correct": correct, **kw}


def test_ratios_are_of_means_over_the_shared_problems(tmp_path, load_benchmark, capsys):
    mod = load_benchmark("benchmarks/countdown_gpu/latency_table.py")
    sprint = _write(tmp_path / "s" / "results.jsonl",
                    [_rec(0, 1.0, 100), _rec(1, 2.0, 200, False), _rec(2, 3.0, 300), _rec(9, 50.0, 10)])
    seq = _write(tmp_path / "q.jsonl.gz", [_rec(0, 2.0, 400), _rec(1, 4.0, 400), _rec(2, 6.0, 1000),
                                           _rec(3, 9.0, 900), _rec(4, 1.0, 10, error="boom")], gz=True)
    c = mod.compare(mod.read_results(sprint.parent), mod.read_results(seq))
    assert c["n"] == 3 and (c["solved_sprint"], c["solved_sequential"]) == (2, 3)
    assert c["wall_ratio"] == pytest.approx(2.0 / 4.0) and c["token_ratio"] == pytest.approx(200 / 600)
    assert c["ms_per_token_sprint"] == pytest.approx(10.0) and c["ms_per_token_ratio"] == pytest.approx(1.5)
    assert c["longest_third"] == 1 and c["wall_ratio_longest_third"] == pytest.approx(3.0 / 6.0)
    assert mod.main([str(tmp_path / "s"), str(seq), "--name", "x"]) == 0
    lo, hi = c["wall_ratio_ci95"]
    assert 1.0 / 2.0 <= lo <= 0.5 <= hi <= 3.0 / 6.0 + 1e-9  # every problem's own ratio is 0.5
    assert "| x | 3 | 2 / 3 | 2.00 / 4.00 | **0.50** [0.50, 0.50] |" in capsys.readouterr().out


def test_bootstrap_interval_brackets_the_ratio_and_narrows_with_more_problems(load_benchmark):
    mod = load_benchmark("benchmarks/countdown_gpu/latency_table.py")
    rng = __import__("random").Random(3)
    den = [rng.uniform(1, 5) for _ in range(400)]
    num = [d * rng.uniform(0.3, 0.9) for d in den]
    ratio = sum(num) / sum(den)
    lo, hi = mod.bootstrap_ratio(num, den)
    lo_small, hi_small = mod.bootstrap_ratio(num[:40], den[:40])
    assert lo < ratio < hi and hi - lo < hi_small - lo_small
    assert mod.bootstrap_ratio(num, den) == (lo, hi)  # fixed seed: the table is reproducible


def test_pairs_are_pooled_by_pair_and_id(tmp_path, load_benchmark, capsys):
    mod = load_benchmark("benchmarks/countdown_gpu/latency_table.py")
    s1 = _write(tmp_path / "s1.jsonl", [_rec(0, 1.0, 100)])
    q1 = _write(tmp_path / "q1.jsonl", [_rec(0, 2.0, 200)])
    s2 = _write(tmp_path / "s2.jsonl", [_rec(0, 3.0, 100)])  # the same id in another pair is another problem
    q2 = _write(tmp_path / "q2.jsonl", [_rec(0, 4.0, 200)])
    assert mod.main([str(s1), str(q1), str(s2), str(q2), "--json"]) == 0
    c = json.loads(capsys.readouterr().out)
    assert c["n"] == 2 and c["wall_ratio"] == pytest.approx(4.0 / 6.0)
    with pytest.raises(SystemExit):
        mod.main([str(s1), str(q1), str(s2)])
    assert "runs come in pairs" in capsys.readouterr().err


def test_runs_with_nothing_in_common_or_broken_lines_are_errors(tmp_path, load_benchmark):
    mod = load_benchmark("benchmarks/countdown_gpu/latency_table.py")
    a = _write(tmp_path / "a.jsonl", [_rec(0, 1.0, 10)])
    b = _write(tmp_path / "b.jsonl", [_rec(1, 1.0, 10)])
    with pytest.raises(ValueError, match="no finished problem in common"):
        mod.compare(mod.read_results(a), mod.read_results(b))
    (tmp_path / "c.jsonl").write_text('{"id": "p0"}\n{not json\n{"id": "p1"}\n')
    with pytest.raises(ValueError, match=r"c.jsonl: line 2 is not valid JSON"):
        mod.read_results(tmp_path / "c.jsonl")
