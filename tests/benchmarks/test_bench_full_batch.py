"""`benchmarks/bench_full_batch.py`: more requests than slots through the real scheduler with a modelled step, one
step at a time while requests wait or in blocks (`FULL_BATCH_BLOCKS`, the default), and blocks in passes where a
prompt joins (`SPLIT_BLOCKS`); each switch is restored."""

from __future__ import annotations

import json


def test_full_batch_blocks_take_fewer_passes_and_the_switch_is_restored(tmp_path, load_benchmark):
    from sprint.backends import transformers_backend as tb

    mod = load_benchmark("benchmarks/bench_full_batch.py")
    before = tb.FULL_BATCH_BLOCKS
    out = tmp_path / "full.json"
    assert mod.main(["--streams", "6", "--max-batch", "2", "--step-ms", "0", "--decode-steps", "4", "--tokens", "16",
                     "--repeats", "1", "--out", str(out)]) == 0
    rows = {r["full_batch_blocks"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows[True]["passes"] < rows[False]["passes"]
    assert tb.FULL_BATCH_BLOCKS == before


def test_split_blocks_take_fewer_passes_and_the_switch_is_restored(tmp_path, load_benchmark):
    from sprint.backends import transformers_backend as tb

    mod = load_benchmark("benchmarks/bench_full_batch.py")
    before = tb.SPLIT_BLOCKS
    out = tmp_path / "split.json"
    # 64 slots x a joining prompt's query bucket (8 rows or more): more rows than one graph takes, so a split step.
    assert mod.main(["--streams", "160", "--max-batch", "64", "--step-ms", "0", "--decode-steps", "4", "--tokens",
                     "24", "--repeats", "1", "--switch", "split_blocks", "--out", str(out)]) == 0
    rows = {r["split_blocks"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows[True]["passes"] < rows[False]["passes"]
    assert tb.SPLIT_BLOCKS == before
