"""`sprint curate run` end to end on the R1 traces, against the local fake OpenAI server and the real HTTP backend.

The scripted "LLM" answers validly except for chosen problems, where it answers with bad JSON, empty text,
overlapping / missing / out-of-range line ranges, a missing prompt, DAG cycles, unknown or missing steps, or a
valid but sequential DAG. Every one must end up in rejects.jsonl with its step and reason; none may crash the run.
"""

import json

import pytest

from sprint.cli import main
from sprint.format import parse, parse_sequential, render_body, render_sequential_body
from sprint.format.layout import messages as layout_messages
from sprint.testing.fake_openai import FakeOpenAIServer

from scripted_llm import answer_for

FAULTS = {
    "Convert the point $(0,3)$": ["extract:bad_json"],
    "If $f(x) = \\frac{3x-2}{x-2}$": ["extract:empty"],
    "How many positive whole-number divisors": ["extract:overlap"],
    "cross-country team": ["extract:missing"],
    "What is the distance, in units": ["extract:out_of_bounds"],
    "least positive integer multiple of 30": ["extract:no_prompt"],
    "$2\\cdot 3 \\cdot 4\\cdot 5+1$": ["dag:cycle"],
    "polynomial of degree 5": ["dag:unknown_step"],
    "volume of the cylinder": ["dag:empty"],
    "proper divisors of 12": ["dag:missing_entry"],
    "smallest positive perfect cube": ["dag:bad_json"],
    "regular hexagon can be divided": ["dag:chain"],
    "Compute: $1-2+3-4+5": ["extract:bad_json", "ok"],  # fixed on the re-ask
}

EXPECTED = {  # id -> (step, code, words in the reason)
    "math500_r1_distill_qwen7b.jsonl:1": ("extract", "invalid_answer", "not valid JSON"),
    "math500_r1_distill_qwen7b.jsonl:3": ("extract", "invalid_answer", "the answer is empty"),
    "math500_r1_distill_qwen7b.jsonl:4": ("extract", "invalid_answer", "overlap"),
    "math500_r1_distill_qwen7b.jsonl:5": ("extract", "invalid_answer", "not in any step"),
    "math500_r1_distill_qwen7b.jsonl:9": ("extract", "invalid_answer", "outside the lines"),
    "math500_r1_distill_qwen7b.jsonl:11": ("extract", "invalid_answer", "execution lines but no prompt"),
    "math500_deepseek_r1.jsonl:11": ("extract", "invalid_answer", "execution lines but no prompt"),
    "math500_deepseek_r1.jsonl:10": ("dag", "invalid_answer", "cycle"),
    "math500_deepseek_r1.jsonl:12": ("dag", "invalid_answer", "unknown parent"),
    "math500_deepseek_r1.jsonl:14": ("dag", "invalid_answer", "the answer is empty"),
    "math500_deepseek_r1.jsonl:13": ("dag", "invalid_answer", "has no entry"),
    "math500_r1_distill_qwen7b.jsonl:13": ("dag", "invalid_answer", "has no entry"),
    "math500_deepseek_r1.jsonl:7": ("dag", "invalid_answer", "not valid JSON"),
    "math500_r1_distill_qwen7b.jsonl:7": ("dag", "invalid_answer", "not valid JSON"),
    "math500_deepseek_r1.jsonl:6": ("pack", "low_ratio", "< 1.5"),
    "math500_r1_distill_qwen7b.jsonl:6": ("pack", "low_ratio", "< 1.5"),
    # Not LLM faults: the data itself (no boxed answer after the thinking / a wrong answer).
    "math500_deepseek_r1.jsonl:1": ("answer", "no_final_answer", "no \\boxed{}"),
    "math500_deepseek_r1.jsonl:19": ("answer", "wrong_answer", "not equivalent"),
}


def responder(body):
    return answer_for(body["messages"], FAULTS)


def run_cli(srv, inputs, out, *extra):
    return main(["curate", "run", *map(str, inputs), "--out", str(out), "--base-url", srv.base_url,
                 "--question-field", "problem", "--trace-field", "full_response", "--answer-field", "ground_truth",
                 "--extract-model", "fake-extract", "--dag-model", "fake-dag", "--concurrency", "4",
                 "--price", "fake-extract=2.5,10", "--no-progress", *extra])


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_curate_run_catches_every_malformed_answer(r1_traces_dir, tmp_path, capsys):
    inputs = sorted(r1_traces_dir.glob("*.jsonl"))
    out = tmp_path / "out"
    with FakeOpenAIServer(responder) as srv:
        srv.fail_next(1, status=400, body="bad request for one call")
        assert run_cli(srv, inputs, out) == 0
        first_requests = len(srv.requests)
        rejects = {r["id"]: r for r in read_jsonl(out / "rejects.jsonl")}
        # The one HTTP failure rejects one trace as an LLM error; nothing about it is cached.
        llm_errors = [r for r in rejects.values() if r["code"] == "llm_error"]
        assert len(llm_errors) == 1 and "400" in llm_errors[0]["reason"]
        # A rerun retries only that trace's calls and reaches the same outcome as a clean run.
        assert run_cli(srv, inputs, out) == 0
        rerun_requests = len(srv.requests) - first_requests
    assert 1 <= rerun_requests <= 6
    text = capsys.readouterr().out
    assert "curated 40 traces" in text and "fake-extract:" in text and "$" in text

    rejects = {r["id"]: r for r in read_jsonl(out / "rejects.jsonl")}
    assert not any(r["code"] == "llm_error" for r in rejects.values())
    for rid, (step, code, words) in EXPECTED.items():
        assert rid in rejects, rid
        r = rejects[rid]
        assert (r["step"], r["code"]) == (step, code), (rid, r)
        assert words in r["reason"], (rid, r)
    # Each scripted fault was retried up to the bound and the re-ask quoted the error.
    retries = [req for req in srv.requests if "That answer cannot be used" in req.body["messages"][-1]["content"]]
    assert any("not valid JSON" in req.body["messages"][-1]["content"] for req in retries)

    all_records = read_jsonl(out / "records.jsonl")
    records = [r for r in all_records if r.get("role", "planner") == "planner"]
    executor_records = [r for r in all_records if r.get("role") == "executor"]
    kept_ids = {r["id"] for r in records}
    assert kept_ids.isdisjoint(rejects)
    assert len(kept_ids) + len(rejects) == 40
    assert "math500_deepseek_r1.jsonl:17" in kept_ids  # fixed on the re-ask
    assert len(records) == 2 * len(kept_ids)
    # One executor record per prompt of every kept SPRINT trajectory, named after it.
    sprint_bodies = {r["id"]: r["messages"][2]["content"] for r in records if r["format"] == "sprint"}
    assert len(executor_records) == sum(len(parse(b).prompts) for b in sprint_bodies.values())
    for rec in executor_records:
        base, _, name = rec["id"].partition("#exec-")
        assert base in sprint_bodies and rec["format"] == "sprint" and name
        body = rec["messages"][2]["content"]
        assert body.endswith("</execution_%s>" % name) and 0 < rec["completion_start"] < len(body)
    for rec in records:
        assert set(rec) == {"id", "format", "question", "answer", "messages"}
        msgs = rec["messages"]
        assert msgs[:2] == layout_messages(rec["question"], rec["format"])
        body = msgs[2]["content"]
        if rec["format"] == "sprint":
            traj = parse(body)
            assert traj.ok and render_body(traj) == body and traj.think
            assert len(traj.stages) >= 1 and traj.final_answer and "\\boxed" in traj.final_answer
            assert len(traj.prompts) / len(traj.stages) >= 1.5
        else:
            assert render_sequential_body(parse_sequential(body)) == body

    summary = json.loads((out / "summary.json").read_text())
    assert summary["total"] == 40 and summary["kept"] == len(kept_ids)
    assert summary["dropped"]["extract/invalid_answer"] == 7
    assert sum(b["count"] for b in summary["ratio_histogram"]) == len(kept_ids) + 2  # + the two low-ratio traces
    assert summary["usage"]["fake-extract"]["cost_usd"] > 0


def test_paper_field_names_and_bad_rows(tmp_path):
    # The paper's fields (problem, thought, solution); as in the release, the final answer comes from the solution.
    row = {"problem": "What is 2 + 3 + 4?",
           "thought": "First add two and three. 2 + 3 = 5. That gives five. Then add four. 5 + 4 = 9. "
                      "So nine. Also check 4 + 5 = 9. Yes. Another way: 3 + 4 = 7. And 2 + 7 = 9. Good.",
           "solution": "We add: $2 + 3 + 4 = \\boxed{9}$."}
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(row) + "\n" + "{not json\n")
    out = tmp_path / "out"
    with FakeOpenAIServer(responder) as srv:
        assert main(["curate", "run", str(src), "--out", str(out), "--base-url", srv.base_url,
                     "--solution-field", "solution", "--no-progress", "--min-ratio", "0",
                     "--no-executor-records"]) == 0
    records = read_jsonl(out / "records.jsonl")
    assert [r["format"] for r in records] == ["sprint", "sequential"]  # the flag left the executor records out
    assert records[0]["answer"] == row["solution"]
    assert "<Final_answer>\nWe add: $2 + 3 + 4 = \\boxed{9}$.\n</Final_answer>" in records[0]["messages"][2]["content"]
    rejects = read_jsonl(out / "rejects.jsonl")
    assert rejects[0]["id"] == "in.jsonl:2" and rejects[0]["code"] == "bad_row" and "invalid JSON" in rejects[0]["reason"]


@pytest.mark.parametrize("missing", ["problem", "thought"])
def test_missing_fields_are_rejected_not_crashing(tmp_path, missing):
    row = {"problem": "Q?", "thought": "A. B. C.", "solution": "\\boxed{1}"}
    del row[missing]
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(row) + "\n")
    with FakeOpenAIServer(responder) as srv:
        assert main(["curate", "run", str(src), "--out", str(tmp_path / "o"), "--base-url", srv.base_url,
                     "--no-progress"]) == 0
        assert srv.requests == []
    (r,) = read_jsonl(tmp_path / "o" / "rejects.jsonl")
    assert (r["step"], r["code"]) == ("input", "missing_field") and missing in r["reason"]
