"""`sprint analyze` end to end through the CLI on the released trajectories, with a tiny local tokenizer."""

from __future__ import annotations

import json

import pytest

from sprint.cli import main


def test_help_documents_the_matching_rule(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for needle in ("planner_trajectory_", "base_model_trajectory_", '"/" becomes "_"', ".json", "--executors",
                   "--summary-json", "--format"):
        assert needle in out


def test_analyze_sprint_with_gold(shared_dir, tiny_tokenizer_dir, tmp_path, capsys):
    items_path, summary_path = tmp_path / "items.jsonl", tmp_path / "summary.json"
    rc = main(["analyze", str(shared_dir / "fixtures/sprint_reference/math500_sprint"),
               "--tokenizer", str(tiny_tokenizer_dir), "--gold", str(shared_dir / "data/math500.jsonl"),
               "--executors", "2", "--out", str(items_path), "--summary-json", str(summary_path), "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    for label in ("n", "parsed", "invalid", "answered", "accuracy", "mean sequential tokens",
                  "median sequential tokens", "mean sequential tokens, W=2", "mean total tokens", "mean stages",
                  "mean prompts per stage"):
        assert label in out
    assert "stray_tag x1" in out and "planner_trajectory_test_prealgebra_1787.txt" in out

    items = [json.loads(line) for line in items_path.read_text().splitlines()]
    assert len(items) == 100
    for key in ("id", "parsed", "sequential_tokens", "total_tokens", "stages", "answer", "correct", "diagnostics"):
        assert key in items[0]
    summary = json.loads(summary_path.read_text())
    assert summary["n"] == 100 and summary["parsed"] == 99
    assert summary["accuracy"] == sum(it["correct"] for it in items) / 100
    assert f"{100 * summary['accuracy']:.1f}%" in out
    assert summary["mean_sequential_tokens"] == sum(it["sequential_tokens"] for it in items) / 100
    assert summary["mean_total_tokens"] == sum(it["total_tokens"] for it in items) / 100
    assert f"{summary['mean_sequential_tokens']:,.1f}" in out


def test_analyze_sequential_without_gold(shared_dir, tiny_tokenizer_dir, tmp_path, capsys):
    summary_path = tmp_path / "summary.json"
    rc = main(["analyze", str(shared_dir / "fixtures/sprint_reference/math500_rft"), "--format", "sequential",
               "--tokenizer", str(tiny_tokenizer_dir), "--summary-json", str(summary_path), "--no-progress"])
    assert rc == 0
    summary = json.loads(summary_path.read_text())
    assert summary["n"] == 50 and summary["accuracy"] is None and summary["no_answer"] > 0
    assert summary["mean_sequential_tokens"] == summary["mean_total_tokens"]
    assert "(sequential)" in capsys.readouterr().out


def test_bad_input_is_one_line_error(tiny_tokenizer_dir, tmp_path, capsys):
    rc = main(["analyze", str(tmp_path / "nope"), "--tokenizer", str(tiny_tokenizer_dir), "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("sprint analyze: error:") and "nope" in err and "Traceback" not in err
    (tmp_path / "a.txt").write_text("x")
    rc = main(["analyze", str(tmp_path), "--tokenizer", str(tiny_tokenizer_dir), "--executors", "0"])
    assert rc == 2 and "--executors must be >= 1" in capsys.readouterr().err
