"""`sprint run` end to end through the CLI, with the scripted backend standing in for a model."""

from __future__ import annotations

import json

import pytest

from sprint.backends.base import ScriptedBackend
from sprint.cli import main
from sprint.inference import app
from sprint.testing.scripted import ScriptedSprintModel

PLAN = "Go.\n<prompt_1.1> A. </prompt_1.1>\n<prompt_1.2> B. </prompt_1.2>\n</Plan_1>"
FINAL = "<Final_answer>\nSo \\boxed{42}.\n</Final_answer>"


@pytest.fixture
def scripted(monkeypatch):
    model = ScriptedSprintModel([PLAN, FINAL], {"1.1": "a", "1.2": "b"}, delays={"executor": 0.02})
    backends = []

    def load(opts):
        b = ScriptedBackend(model, delay_s=model.delay)
        backends.append((opts, b))
        return b

    monkeypatch.setattr(app, "_load_backend", load)
    monkeypatch.setattr(app, "_load_tokenizer", lambda name, backend: None)
    return backends


def test_single_question_live_then_summary_and_out(scripted, tmp_path, capsys):
    out = tmp_path / "one.jsonl"
    assert main(["run", "What is 6*7?", "--model", "m", "--base-url", "http://x/v1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "sprint result" in text and "42" in text and "critical-path tokens" in text
    rec = json.loads(out.read_text())
    assert rec["answer"] == "42" and rec["method"] == "sprint" and rec["id"].startswith("q-")
    opts, _ = scripted[0]
    assert opts.base_urls == ["http://x/v1"] and opts.model == "m"


def test_no_eager_and_settings_reach_the_config(scripted, tmp_path):
    out = tmp_path / "r.jsonl"
    main(["run", "Q?", "--model", "m", "--no-eager", "--max-stages", "5", "--temperature", "0.3", "--out", str(out)])
    cfg = json.loads(out.read_text())["meta"]["config"]
    assert cfg["eager"] is False and cfg["max_stages"] == 5
    assert cfg["planner_temperature"] == cfg["executor_temperature"] == 0.3


def test_batch_writes_every_item_and_resumes(scripted, tmp_path, capsys):
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"problem": f"Q{k}?", "unique_id": f"u{k}"}) + "\n" for k in range(5)))
    out = tmp_path / "out.jsonl"
    args = ["run", "--input", str(inp), "--out", str(out), "--model", "m", "--concurrency", "2", "--no-progress"]
    assert main(args) == 0
    assert sorted(json.loads(x)["id"] for x in out.read_text().splitlines()) == [f"u{k}" for k in range(5)]
    assert main(args) == 0
    assert "0 solved, 5 already in" in capsys.readouterr().out
    assert len(out.read_text().splitlines()) == 5


def test_baseline_method(scripted, tmp_path):
    out = tmp_path / "r.jsonl"
    assert main(["run", "Q?", "--model", "m", "--method", "sequential", "--max-tokens", "50", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["method"] == "sequential"


def test_usage_errors_are_one_clear_line(capsys, tmp_path):
    assert main(["run", "Q?"]) == 2
    assert "--model is required" in capsys.readouterr().err
    assert main(["run", "--input", str(tmp_path / "x.jsonl"), "--model", "m"]) == 2
    assert "--input needs --out" in capsys.readouterr().err
    assert main(["run", "Q?", "--model", "m", "--method", "sc", "--no-eager"]) == 2
    assert "eager do not apply to --method sc" in capsys.readouterr().err
    assert main(["run", "--model", "m"]) == 2
    assert "either a QUESTION or --input" in capsys.readouterr().err
