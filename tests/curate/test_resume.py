"""Kill `sprint curate run` in the middle, rerun it: the outputs equal an uninterrupted run, and no LLM call that
had finished before the kill is made again."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sprint.cli import main
from sprint.testing.fake_openai import FakeOpenAIServer

from scripted_llm import answer_for

FAULTS = {"regular hexagon can be divided": ["dag:chain"], "Compute: $1-2+3-4+5": ["extract:bad_json", "ok"],
          "polynomial of degree 5": ["dag:cycle"]}
ROOT = Path(__file__).resolve().parents[2]


def responder(body):
    return answer_for(body["messages"], FAULTS)


def args(inputs, out, url):
    return ["curate", "run", *map(str, inputs), "--out", str(out), "--base-url", url, "--question-field", "problem",
            "--trace-field", "full_response", "--answer-field", "ground_truth", "--concurrency", "2",
            "--no-progress"]


def cache_entries(out: Path) -> int:
    return sum(1 for _ in (out / "cache").glob("*/*.json"))


def test_kill_and_resume_equals_uninterrupted_run(r1_traces_dir, tmp_path):
    inputs = [r1_traces_dir / "math500_deepseek_r1.jsonl"]
    clean, resumed = tmp_path / "clean", tmp_path / "resumed"
    with FakeOpenAIServer(responder) as srv:
        assert main(args(inputs, clean, srv.base_url)) == 0
        total_calls = len(srv.requests)
    assert total_calls == cache_entries(clean) >= 20

    # Slow answers, so that the kill lands in the middle of the run.
    with FakeOpenAIServer(responder, delay_s=0.15) as srv:
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
        proc = subprocess.Popen([sys.executable, "-m", "sprint.cli", *args(inputs, resumed, srv.base_url)],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while cache_entries(resumed) < 8 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stderr.close()
        done_before_kill = cache_entries(resumed)
        assert 8 <= done_before_kill < total_calls
        assert not (resumed / "records.jsonl").exists()  # outputs appear only at the end, whole
        # No half-written cache entry: every file is complete JSON.
        for f in (resumed / "cache").glob("*/*.json"):
            json.loads(f.read_text())
        srv.delay_s = 0.0
        before = len(srv.requests)
        assert main(args(inputs, resumed, srv.base_url)) == 0
        redone = len(srv.requests) - before

    # Only the calls that had not finished were made again.
    assert redone == total_calls - done_before_kill
    for name in ("records.jsonl", "rejects.jsonl"):
        assert (resumed / name).read_text() == (clean / name).read_text(), name
    assert (clean / "records.jsonl").read_text().count('"format": "sprint"') >= 5
