"""`sprint train` on the command line: dry run on real records, overrides, and one-line errors for bad input."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from curated_records import sequential_records, sprint_records  # noqa: E402

from sprint.cli import main  # noqa: E402
from sprint.train.data import write_records  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture()
def setup(tmp_path):
    from sprint.testing.tiny import build_tiny_tokenizer

    records = write_records(sprint_records() + sequential_records(), tmp_path / "train.jsonl")
    build_tiny_tokenizer(tmp_path / "tok", tags_as_tokens=True)
    return records, tmp_path / "tok"


def test_dry_run_on_the_countdown_preset(setup, capsys):
    records, tok = setup
    rc = main(["train", "--config", str(CONFIGS / "countdown-small.yaml"), "--dry-run", "--no-progress",
               f"data.train={records}", "data.eval=null", f"model.tokenizer={tok}", "data.format=sequential"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "train: 2 samples" in out and "longer than max_length=4096" in out and "optimizer steps" in out


def test_bad_override_is_one_clear_line(setup, capsys):
    records, tok = setup
    rc = main(["train", "--config", str(CONFIGS / "countdown-small.yaml"), "--dry-run",
               f"data.train={records}", "training.learning_rat=1e-3"])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown config key 'training.learning_rat'" in err and "Traceback" not in err


def test_missing_records_file(capsys, tmp_path):
    rc = main(["train", "--config", str(CONFIGS / "paper-7b.yaml"), "--dry-run", f"data.train={tmp_path / 'no.jsonl'}",
               f"model.tokenizer={tmp_path}"])
    assert rc == 2 and "not found" in capsys.readouterr().err
