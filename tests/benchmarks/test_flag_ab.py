"""`benchmarks/countdown_gpu/flag_ab.py`: variants parse, their settings hold inside a block and are undone after it
(module constants and the switch interval), and the summary pairs each variant with the first over the same
problems (the solves themselves need the bundled models on a GPU: not run here)."""

from __future__ import annotations

import sys

import pytest


def test_variants_parse_and_bad_ones_are_refused(load_benchmark):
    mod = load_benchmark("benchmarks/countdown_gpu/flag_ab.py")
    assert mod.parse_variant("c=kernels.ATTENTION_PROGRAMS=512,switchinterval=0.0002") == (
        "c", [("kernels.ATTENTION_PROGRAMS", "512"), ("switchinterval", "0.0002")])
    for bad in ("c", "c=", "c=ATTENTION_PROGRAMS=512", "c=kernels.X"):
        with pytest.raises(ValueError):
            mod.parse_variant(bad)


def test_settings_hold_inside_the_block_and_are_undone(load_benchmark):
    mod = load_benchmark("benchmarks/countdown_gpu/flag_ab.py")
    from sprint.backends import transformers_backend as tb

    keep, interval = tb.IDLE_KEEP_S, sys.getswitchinterval()
    with mod.applied([("transformers_backend.IDLE_KEEP_S", "0.25"), ("switchinterval", "0.001")]):
        assert tb.IDLE_KEEP_S == 0.25 and sys.getswitchinterval() == pytest.approx(0.001)
    assert tb.IDLE_KEEP_S == keep and sys.getswitchinterval() == pytest.approx(interval)
    with pytest.raises(ValueError):
        with mod.applied([("transformers_backend.NO_SUCH_CONSTANT", "1")]):
            pass
    from sprint.inference import orchestrator

    keep = orchestrator.EXECUTOR_KEEP_KV   # a module named in full, a bool constant
    with mod.applied([("sprint.inference.orchestrator.EXECUTOR_KEEP_KV", str(int(not keep)))]):
        assert orchestrator.EXECUTOR_KEEP_KV is (not keep)
    assert orchestrator.EXECUTOR_KEEP_KV is keep
    from sprint.backends import decode_graphs

    keep = decode_graphs.EXTRA_BUCKETS   # a tuple of ints, written with colons
    with mod.applied([("decode_graphs.EXTRA_BUCKETS", "5:6")]):
        assert decode_graphs.EXTRA_BUCKETS == (5, 6)
    assert decode_graphs.EXTRA_BUCKETS == keep


def test_summary_pairs_each_variant_with_the_first(load_benchmark):
    mod = load_benchmark("benchmarks/countdown_gpu/flag_ab.py")
    records = []
    for i in range(4):
        for variant, scale in (("base", 1.0), ("fast", 0.8)):
            records.append({"id": f"p{i}", "variant": variant, "model": "sprint", "wall_clock_s": scale * (1 + i),
                            "answer": "1+2" if i else f"{variant}"})
            records.append({"id": f"p{i}", "variant": variant, "model": "sequential", "wall_clock_s": 2.0 * (1 + i),
                            "answer": "x"})
    rows = mod.summarize(records, ["base", "fast"], ["sprint", "sequential"])
    fast = next(r for r in rows if r["model"] == "sprint" and r["variant"] == "fast")
    assert fast["ratio_to_first"] == pytest.approx(0.8) and fast["problems"] == 4 and fast["answers_agree"] == 3
    target = {r["variant"]: r["ratio"] for r in rows if r["model"] == "sprint / sequential"}
    assert target == {"base": pytest.approx(0.5), "fast": pytest.approx(0.4)}


def test_rounds_summary_compares_the_elapsed_time_of_the_rounds_both_finished(load_benchmark):
    mod = load_benchmark("benchmarks/countdown_gpu/flag_ab.py")
    records = []
    for r, (base_s, fast_s) in enumerate(((10.0, 8.0), (12.0, 6.0), (9.0, None))):   # round 2: "fast" never ran
        for variant, elapsed in (("base", base_s), ("fast", fast_s)):
            if elapsed is None:
                continue
            for i in range(3):
                records.append({"id": f"r{r}p{i}", "variant": variant, "model": "sprint", "round": r,
                                "round_s": elapsed, "wall_clock_s": elapsed / 2, "correct": i < 2,
                                "answer": "y" if (variant, i) == ("fast", 0) else "x"})
    rows = mod.summarize_rounds(records, ["base", "fast"], ["sprint"])
    base, fast = rows
    assert base["rounds"] == fast["rounds"] == 2 and fast["problems"] == 6
    assert base["elapsed_s"] == 22.0 and fast["elapsed_s"] == 14.0
    assert fast["ratio_to_first"] == pytest.approx(14 / 22, abs=1e-3) and fast["round_ratios"] == [0.8, 0.5]
    assert fast["answers_agree"] == 4 and fast["solved"] == 4
