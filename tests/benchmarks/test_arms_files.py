"""The arms files of `benchmarks/countdown_gpu/arms.sh`: every arm's overrides load, so a typo fails here and not
on a rented four-GPU machine after the data build."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARMS = sorted((REPO / "benchmarks" / "countdown_gpu" / "arms").glob("*.txt"))


def arms(path: Path) -> list[list[str]]:
    """The arm lines as `arms.sh` reads them: `NAME FORMAT DATA_OVERRIDES [TRAIN_OVERRIDES]`."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            out.append(line.split())
    return out


def overrides(field: str) -> list[str]:
    return [] if field == "-" else field.split(",")


@pytest.mark.parametrize("path", ARMS, ids=lambda p: p.name)
def test_every_arm_loads(path):
    from sprint.tasks.countdown.data import load_data_config
    from sprint.train.config import load_config

    rows = arms(path)
    assert rows, f"{path.name}: no arms"
    names = [r[0] for r in rows]
    assert len(set(names)) == len(names), f"{path.name}: an arm name repeats"
    for row in rows:
        assert 3 <= len(row) <= 4, f"{path.name}: {row[0]}: expected NAME FORMAT DATA [TRAIN], got {row}"
        name, fmt, data = row[:3]
        assert fmt in ("sprint", "sequential"), f"{path.name}: {name}: format {fmt!r}"
        load_data_config(REPO / "configs" / "countdown-data.yaml", overrides(data))
        train = overrides(row[3]) if len(row) == 4 else []
        load_config(REPO / "configs" / "countdown-small.yaml", [f"data.format={fmt}", *train])
