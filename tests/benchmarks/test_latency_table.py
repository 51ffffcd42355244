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
    assert "| x | 3 | 2 / 3 | 2.00 / 4.00 | **0.50** |" in capsys.readouterr().out


def test_runs_with_nothing_in_common_or_broken_lines_are_errors(tmp_path, load_benchmark):
    mod = load_benchmark("benchmarks/countdown_gpu/latency_table.py")
    a = _write(tmp_path / "a.jsonl", [_rec(0, 1.0, 10)])
    b = _write(tmp_path / "b.jsonl", [_rec(1, 1.0, 10)])
    with pytest.raises(ValueError, match="no finished problem in common"):
        mod.compare(mod.read_results(a), mod.read_results(b))
    (tmp_path / "c.jsonl").write_text('{"id": "p0"}\n{not json\n{"id": "p1"}\n')
    with pytest.raises(ValueError, match=r"c.jsonl: line 2 is not valid JSON"):
        mod.read_results(tmp_path / "c.jsonl")
