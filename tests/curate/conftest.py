"""Shared fixtures of the curation tests: the released SPRINT artifacts and the R1 traces, read in place."""

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
REFERENCE = SHARED / "fixtures" / "sprint_reference" / "curation"
R1_TRACES = SHARED / "data" / "r1_traces"


@pytest.fixture
def reference_dir() -> Path:
    if not REFERENCE.is_dir():
        pytest.skip("../shared/fixtures/sprint_reference/curation is not available")
    return REFERENCE


@pytest.fixture
def r1_traces_dir() -> Path:
    if not R1_TRACES.is_dir():
        pytest.skip("../shared/data/r1_traces is not available")
    return R1_TRACES
