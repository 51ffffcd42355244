"""Real curated records for the training tests (built by `sprint.testing.records` from ../shared, read in place).

Tests skip when ../shared is absent; callers write what they build into pytest tmp dirs. A plain module (not a
conftest) so test files can import it without clashing with tests/conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared"


def sprint_records() -> list[dict]:
    from sprint.testing.records import reference_sprint_records

    try:
        return reference_sprint_records(SHARED)
    except FileNotFoundError as e:
        pytest.skip(str(e))


def sequential_records(n: int = 2) -> list[dict]:
    from sprint.testing.records import r1_sequential_records

    try:
        return r1_sequential_records(SHARED, n)
    except FileNotFoundError as e:
        pytest.skip(str(e))
