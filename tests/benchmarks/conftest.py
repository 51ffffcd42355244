"""Benchmark scripts are files, not package modules: `load_benchmark("benchmarks/x.py")` imports one by path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def load_benchmark():
    def load(relpath: str):
        path = REPO / relpath
        spec = importlib.util.spec_from_file_location(f"_benchmark_{path.stem}", path)
        mod = importlib.util.module_from_spec(spec)
        # Registered before it runs: a dataclass in the script looks its module up there.
        sys.modules[spec.name] = mod
        spec.loader.exec_module(mod)
        return mod
    return load
