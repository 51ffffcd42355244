"""`sprint curate pack` and `sprint curate replay` from the command line."""

import json
from pathlib import Path

import pytest

from sprint.cli import main

REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "sprint_reference" / "curation"


def run(capsys, *argv):
    rc = main(list(map(str, argv)))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_pack_our_json_with_trace(tmp_path, capsys):
    trace = ("Plan it. One first. One second. One third. One fourth. Two first. Two second. Two third. Two fourth. "
             "Combine. Sum up. End.")
    steps = {"steps": [
        {"id": 1, "description": "setup", "plan_lines": [1, 1]},
        {"id": 2, "description": "one", "plan_lines": None, "prompt": "Do one.", "execution_lines": [2, 5]},
        {"id": 3, "description": "two", "prompt": "Do two.", "execution_lines": [6, 9]},
        {"id": 4, "description": "combine", "plan_lines": [10, 10], "prompt": "Combine.", "execution_lines": [11, 12]},
    ]}
    (tmp_path / "steps.json").write_text(json.dumps(steps))
    (tmp_path / "dag.json").write_text(json.dumps({"1": [], "2": [1], "3": [1], "4": [2, 3]}))
    (tmp_path / "trace.txt").write_text(trace)
    rc, out, _ = run(capsys, "curate", "pack", "--steps", tmp_path / "steps.json", "--dag", tmp_path / "dag.json",
                     "--trace", tmp_path / "trace.txt")
    assert rc == 0
    assert out.count("\n") == 1
    # 11-12 is short (12 - 11 < 3): step 4 folds into a plan-only step in stage 2; 2 executions / 2 stages.
    assert json.loads(out) == {"stages": {"1": 1, "2": 1, "3": 1, "4": 2}, "ratio": 1.0, "kept": False,
                               "reason": "low_ratio: 1.000 < 1.5"}
    rc, out, _ = run(capsys, "curate", "pack", "--steps", tmp_path / "steps.json", "--dag", tmp_path / "dag.json",
                     "--trace", tmp_path / "trace.txt", "--width", "1", "--fold-threshold", "0", "--min-ratio", "1")
    assert json.loads(out) == {"stages": {"1": 1, "2": 1, "3": 2, "4": 3}, "ratio": 1.0, "kept": True,
                               "reason": None}


def test_pack_bad_input_is_one_clear_error(tmp_path, capsys):
    (tmp_path / "steps.json").write_text(json.dumps({"steps": [{"id": 1, "plan": "x"}, {"id": 2, "plan": "y"}]}))
    (tmp_path / "dag.json").write_text(json.dumps({"1": [], "2": [5]}))
    rc, out, err = run(capsys, "curate", "pack", "--steps", tmp_path / "steps.json", "--dag", tmp_path / "dag.json")
    assert rc == 2 and out == "" and "step 2 has unknown parent 5" in err
    (tmp_path / "steps.json").write_text(json.dumps({"steps": [{"id": 1, "plan_lines": [1, 9]}]}))
    (tmp_path / "t.txt").write_text("One. Two.")
    rc, out, err = run(capsys, "curate", "pack", "--steps", tmp_path / "steps.json", "--dag", tmp_path / "dag.json",
                       "--trace", tmp_path / "t.txt")
    assert rc == 2 and "step 1 plan: line range 1-9 is outside 1-2" in err


def test_pack_and_replay_paper_artifacts(capsys):
    if not REFERENCE.is_dir():
        pytest.skip("../shared/fixtures/sprint_reference/curation is not available")
    sep = REFERENCE / "component_separation_output_gpt-4o" / "component_separation_5.txt"
    rc, out, _ = run(capsys, "curate", "pack", "--steps", sep, "--dag",
                     REFERENCE / "created_dags_gpt-4o" / "created_dag_5.json")
    got = json.loads(out)
    assert rc == 0 and got["kept"] and got["ratio"] == 1.6 and got["stages"]["11"] == 1 and got["stages"]["16"] == 4
    rc, out, _ = run(capsys, "curate", "replay", "--reference", REFERENCE)
    assert rc == 0 and out.count("render: identical") == 3 and "problem 6:" in out
