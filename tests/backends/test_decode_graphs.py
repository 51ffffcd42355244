"""`sprint.backends.decode_graphs` pieces that need no GPU: the host side of a graph step's inputs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from sprint.backends import decode_graphs  # noqa: E402
from sprint.backends.transformers_backend import SlotCache, SlotSeq  # noqa: E402


def _graphs():
    graphs = decode_graphs.DecodeGraphs.__new__(decode_graphs.DecodeGraphs)
    graphs.backend = SimpleNamespace(device=torch.device("cpu"))
    return graphs


def test_long_prefill_inputs_built_with_numpy_equal_the_list_built_ones(monkeypatch):
    """A long prefill's [6, Q] input (one slot, Q one of the long buckets) is built with numpy; it holds exactly what
    the list-built input of the short buckets holds (ids, positions, key lengths, real rows, prefix sources), padding
    and a shared prefix included."""
    cache = SlotCache(4)
    cache.ensure(0, torch.zeros(1, 1, 1, 4), torch.zeros(1, 1, 1, 4), 64, 4)
    planner = cache.acquire()
    planner.length = 40
    other = cache.acquire()
    cache.copy_prefix(planner, other, 30)   # slot 1 reads its first 30 positions from slot 0
    ids = list(range(1000, 1100))
    segments = [(0, 100, SlotSeq(1, 30), 30)]
    graphs, q = _graphs(), decode_graphs.LONG_QUERY_BUCKETS[0]
    assert q > decode_graphs.QUERY_BUCKETS[-1] and q > 100
    fast = graphs._inputs(2, q, 512, segments, ids, cache)
    monkeypatch.setattr(decode_graphs, "QUERY_BUCKETS", (*decode_graphs.QUERY_BUCKETS, q))   # the list path
    plain = graphs._inputs(2, q, 512, segments, ids, cache)
    assert fast.dtype == plain.dtype == torch.long and torch.equal(fast, plain)
    row = fast[:, q:2 * q]   # slot 1's rows: 100 tokens, then the last one repeated
    assert row[0, :100].tolist() == ids and set(row[0, 100:].tolist()) == {ids[-1]}
    assert row[1, 99].item() == 129 and row[2, 99].item() == 130 and set(row[3].tolist()) == {1}
    assert set(row[4].tolist()) == {0} and set(row[5].tolist()) == {30}
    assert set(fast[3, :q].tolist()) == {0} and set(fast[1, :q].tolist()) == {511}   # slot 0: dummy rows



def test_key_buckets_double_from_the_minimum_with_splits_between(monkeypatch):
    """Key buckets: 256 doubled up to the capacity (which is always the last); with KEY_BUCKET_SPLITS n, n - 1 evenly
    spaced sizes between doublings, none past the capacity."""
    assert decode_graphs.key_buckets(4096) == [256, 512, 1024, 2048, 4096]
    assert decode_graphs.key_buckets(1000) == [256, 512, 1000]
    monkeypatch.setattr(decode_graphs, "KEY_BUCKET_SPLITS", 2)
    assert decode_graphs.key_buckets(4096) == [256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096]
    assert decode_graphs.key_buckets(700) == [256, 384, 512, 700]
    monkeypatch.setattr(decode_graphs, "KEY_BUCKET_SPLITS", 4)
    assert decode_graphs.key_buckets(512) == [256, 320, 384, 448, 512]
