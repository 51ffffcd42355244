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
        return b, None

    monkeypatch.setattr(app, "_load_backend", load)
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
    assert main(["run", "Q?"]) == 2   # the bundled default model answers Countdown questions only
    err = capsys.readouterr().err
    assert "no --model given" in err and "Countdown" in err and err.count("\n") == 1
    assert main(["run", "--input", str(tmp_path / "x.jsonl"), "--model", "m"]) == 2
    assert "--input needs --out" in capsys.readouterr().err
    assert main(["run", "Q?", "--model", "m", "--method", "sc", "--no-eager"]) == 2
    assert "eager do not apply to --method sc" in capsys.readouterr().err
    assert main(["run", "--model", "m"]) == 2
    assert "either a QUESTION or --input" in capsys.readouterr().err


@pytest.mark.integration
def test_single_question_on_the_in_process_tiny_model(tiny_llama_dir, tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    code = main(["run", "What is 2 + 3?", "--model", str(tiny_llama_dir), "--max-stages", "2",
                 "--max-plan-tokens", "12", "--max-answer-tokens", "6", "--out", str(out)])
    assert code == 0
    rec = json.loads(out.read_text())
    from sprint.format import parse

    assert parse(rec["trajectory"]).ok and rec["calls"][0]["prompt_tokens"] > 0
    assert "forced_final_answer" in {r["kind"] for r in rec["repairs"]}


@pytest.mark.integration
def test_single_question_over_http_with_the_fake_server(tiny_tokenizer_dir, tmp_path):
    from sprint.testing.fake_openai import FakeOpenAIServer

    model = ScriptedSprintModel([PLAN, FINAL], {"1.1": "a </execution_1.1>", "1.2": "b </execution_1.2>"})
    out = tmp_path / "r.jsonl"
    with FakeOpenAIServer(lambda req: model(req["prompt"])) as srv:
        code = main(["run", "What is 6*7?", "--base-url", srv.base_url, "--tokenizer", str(tiny_tokenizer_dir),
                     "--out", str(out)])
        prompts = [r.body["prompt"] for r in srv.requests]
    assert code == 0
    rec = json.loads(out.read_text())
    assert rec["answer"] == "42" and len(prompts) == 4
    assert sum(p.endswith("<execution_1.2>\n") for p in prompts) == 1
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    planner = rec["calls"][0]
    # Counts come from the server's usage (its own tokenizer); the format metrics from the given tokenizer.
    assert planner["prompt_tokens"] > 0 and rec["sequential_tokens"] > 0
    assert rec["total_tokens"] == sum(len(tok(t, add_special_tokens=False)["input_ids"])
                                      for t in ["Go.", "A.", "B.", "a", "b", "So \\boxed{42}."])
