"""`sprint report`: tables and figures from small synthetic run folders and from the paper's released outputs."""

import json
from pathlib import Path

import pytest

from sprint.eval.report import (build_report, load_inputs, quantile_edges, reduction_by_baseline_length,
                                runtime_estimate, trajectory_method, write_report)
from sprint.eval.runner import RESULTS, SETTINGS, ResultLog
from sprint.format import Execution, Plan, Prompt, Stage, Trajectory, render

PNG = b"\x89PNG\r\n\x1a\n"


def sprint_text(question: str, prompts_per_stage: list[int], answer: str) -> str:
    stages = []
    for i, k in enumerate(prompts_per_stage, start=1):
        parts = ["Think about it."] + [Prompt(i, j, f"do part {j}") for j in range(1, k + 1)]
        stages.append(Stage(i, Plan(parts), [Execution(i, j, f"part {j} done") for j in range(1, k + 1)]))
    return render(Trajectory(question=question, stages=stages, final_answer=f"\\boxed{{{answer}}}"))


def write_run(folder: Path, method: str, records: list[dict], label: str | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / SETTINGS).write_text(json.dumps({"task": {"task": "math500"}, "method": method, "model": "m",
                                               **({"label": label} if label else {})}))
    log = ResultLog(folder / RESULTS)
    for r in records:
        log.append(r)
    return folder


def synthetic_runs(tmp_path: Path) -> tuple[Path, Path]:
    """8 items; the sequential baseline uses 100*(i+1) tokens, SPRINT half of that; levels 1..4."""
    seq, spr = [], []
    for i in range(8):
        level = 1 + i % 4
        base = {"id": f"test/x/{i}.json", "gold": "1", "meta": {"level": level}}
        seq.append({**base, "answer": "1" if i < 6 else None, "correct": i < 6, "sequential_tokens": 100 * (i + 1),
                    "total_tokens": 100 * (i + 1), "wall_clock_s": 1.0 + i,
                    "calls": [{"role": "sequential", "stage": None, "prompt_id": None, "start_s": 0.0,
                               "end_s": 0.9 + i, "ttft_s": 0.1, "generated_tokens": 100 * (i + 1)}]})
        # SPRINT: `level` stages, the first one with two prompts.
        pps = [2] + [1] * (level - 1)
        spr.append({**base, "answer": "1", "correct": i != 3, "sequential_tokens": 50 * (i + 1),
                    "total_tokens": 80 * (i + 1), "wall_clock_s": 0.5 + i / 2,
                    "trajectory": sprint_text(f"q{i}", pps, "1"),
                    "calls": [{"role": "planner", "stage": 1, "prompt_id": None, "start_s": 0.0, "end_s": 0.4,
                               "ttft_s": 0.1, "generated_tokens": 30},
                              {"role": "executor", "stage": 1, "prompt_id": "1.1", "start_s": 0.2,
                               "end_s": 0.3 + i / 2, "ttft_s": 0.05, "generated_tokens": 20, "dispatch_tokens": 15}]})
    return write_run(tmp_path / "seq", "sequential", seq, "baseline"), write_run(tmp_path / "spr", "sprint", spr)


def test_runtime_estimate_follows_the_critical_path():
    planner = {"role": "planner", "stage": 1, "prompt_id": None, "start_s": 0.0, "end_s": 2.0, "ttft_s": 0.2,
               "generated_tokens": 100}
    # Dispatched after 50 planner tokens: 0.2 s + 50 * 0.018 s = 1.1 s, then runs 3 s: the stage takes 4.1 s.
    ex1 = {"role": "executor", "stage": 1, "prompt_id": "1.1", "start_s": 1.1, "end_s": 4.1, "ttft_s": 0.1,
           "generated_tokens": 80, "dispatch_tokens": 50}
    ex2 = {"role": "executor", "stage": 1, "prompt_id": "1.2", "start_s": 2.0, "end_s": 2.5, "ttft_s": 0.1,
           "generated_tokens": 10, "dispatch_tokens": 100}
    answer = {"role": "final_answer", "stage": None, "prompt_id": None, "start_s": 5.0, "end_s": 5.5, "ttft_s": 0.1,
              "generated_tokens": 5}
    assert runtime_estimate([planner, ex1, ex2, answer]) == pytest.approx(4.1 + 0.5)
    # A retried executor runs its attempts back to back.
    retry = dict(ex1, start_s=4.2, end_s=5.2)
    assert runtime_estimate([planner, ex1, retry]) == pytest.approx(5.1)
    # Self-consistency samples run in parallel: the slowest counts.
    samples = [{"role": "sample", "stage": None, "prompt_id": str(k), "start_s": 0.0, "end_s": 1.0 + k,
                "ttft_s": 0.1, "generated_tokens": 10} for k in range(3)]
    assert runtime_estimate(samples) == pytest.approx(3.0)
    assert runtime_estimate([]) is None
    assert runtime_estimate([dict(planner, end_s=None)]) is None


def test_quantile_edges_and_bins():
    assert quantile_edges([1, 2, 3, 4, 5, 6, 7, 8], 4) == [1, 3, 5, 7, 8]
    assert quantile_edges([5, 5, 5], 3) == [5, 6]


def test_report_on_synthetic_run_folders(tmp_path):
    seq, spr = synthetic_runs(tmp_path)
    report = write_report([seq, spr], tmp_path / "out", progress=False)
    rows = {r["label"]: r for r in report["series"]}
    assert set(rows) == {"baseline", "spr"}
    b, s = rows["baseline"], rows["spr"]
    assert (b["method"], b["n"], b["correct"], b["no_answer"]) == ("sequential", 8, 6, 2)
    assert (s["method"], s["n"], s["correct"]) == ("sprint", 8, 7)
    assert b["mean_sequential_tokens"] == 450 and s["mean_sequential_tokens"] == 225
    assert s["mean_total_tokens"] == 360
    # Stages: levels 1..4 give 1..4 stages (two items each), the first stage of each has two prompts.
    assert s["mean_stages"] == 2.5 and b["mean_stages"] is None
    (levels,) = report["stages_by_level"]
    assert [(lv["level"], lv["n"], lv["mean_stages"], lv["mean_multi_prompt_stages"]) for lv in levels["levels"]] \
        == [(1, 2, 1, 1), (2, 2, 2, 1), (3, 2, 3, 1), (4, 2, 4, 1)]
    # SPRINT uses exactly half the baseline's sequential tokens on every item.
    (red,) = report["reduction"]
    assert red["baseline"] == "baseline" and red["n"] == 8 and red["reduction"] == pytest.approx(0.5)
    assert [b_["n"] for b_ in red["bins"]] == [4, 4]  # at least 3 items a bin: 2 bins of 4
    assert all(b_["reduction"] == pytest.approx(0.5) for b_ in red["bins"])
    # Runtime: the baseline's estimate is its single call; SPRINT's is planner vs dispatched executor.
    rt = {r["label"]: r for r in report["runtime"]}
    assert rt["baseline"]["mean_runtime_estimate_s"] == pytest.approx(sum(0.9 + i for i in range(8)) / 8)
    assert rt["spr"]["mean_wall_clock_s"] == pytest.approx(sum(0.5 + i / 2 for i in range(8)) / 8)
    out = tmp_path / "out"
    names = {Path(p).name for p in report["figures"]}
    assert names == {"accuracy_vs_sequential_tokens.png", "stages_by_level.png",
                     "sequential_token_reduction.png", "runtime.png"}
    for name in names:
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 20_000
    md = (out / "report.md").read_text()
    assert "| math500 | spr | sprint | 8 | 87.5% [52.9, 97.8] | 0 | 225 |" in md
    assert "![runtime](runtime.png)" in md
    assert json.loads((out / "report.json").read_text())["series"][0]["label"] == "baseline"


def test_folder_of_sub_runs_labels_and_errors(tmp_path):
    seq, spr = synthetic_runs(tmp_path / "both")
    series = load_inputs([tmp_path / "both"], labels={"SPRINT-7B": str(spr)})
    assert [s.label for s in series] == ["baseline", "SPRINT-7B"]
    with pytest.raises(ValueError, match="both labelled 'baseline'"):
        load_inputs([seq, seq])
    traj = tmp_path / "traj"
    traj.mkdir()
    (traj / "a.txt").write_text("thinking \\boxed{1}")
    with pytest.raises(ValueError, match="--tokenizer is needed"):
        load_inputs([traj])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="neither a run folder"):
        load_inputs([empty])
    with pytest.raises(FileNotFoundError):
        load_inputs([tmp_path / "missing"])


def test_method_of_a_trajectory_folder(tmp_path):
    a = tmp_path / "a"
    a.mkdir()
    (a / "x.txt").write_text(sprint_text("q", [1], "2"))
    b = tmp_path / "b"
    b.mkdir()
    (b / "x.txt").write_text("<think>\nhmm \\boxed{2}\n</think>")
    assert trajectory_method(a, None) == "sprint" and trajectory_method(b, None) == "sequential"
    assert trajectory_method(b, "sprint") == "sprint"
    (b / "base_model_trajectory_x.txt").write_text("hmm")
    assert trajectory_method(b, "sprint") == "sequential"  # the release's file prefix wins


def test_report_on_the_papers_released_outputs(shared_dir, tiny_tokenizer_dir, tmp_path):
    ref = shared_dir / "fixtures" / "sprint_reference"
    report = write_report([ref / "math500_sprint", ref / "math500_rft"], tmp_path,
                          tokenizer=str(tiny_tokenizer_dir), gold=shared_dir / "data" / "math500.jsonl",
                          progress=False)
    rows = {r["label"]: r for r in report["series"]}
    s, b = rows["math500_sprint"], rows["math500_rft"]
    assert (s["method"], s["n"], b["method"], b["n"]) == ("sprint", 100, "sequential", 50)
    assert s["task"] == b["task"] == "math500"
    # Graded with math-verify over all items; about a fifth of the baseline's outputs have no final box.
    assert s["correct"] == 92 and b["correct"] == 38 and b["no_answer"] == 7
    assert s["mean_total_tokens"] > s["mean_sequential_tokens"] > 0
    assert b["mean_total_tokens"] == b["mean_sequential_tokens"]
    (levels,) = report["stages_by_level"]
    assert [lv["level"] for lv in levels["levels"]] == [1, 2, 3, 4, 5]
    assert sum(lv["n"] for lv in levels["levels"]) == 100
    assert all(0 < lv["mean_multi_prompt_stages"] <= lv["mean_stages"] for lv in levels["levels"])
    (red,) = report["reduction"]
    assert red["n"] == 16 and sum(b_["n"] for b_ in red["bins"]) == 16
    assert {m["n"] for m in report["matched"]} == {16}
    assert report["runtime"] == []
    assert {Path(p).name for p in report["figures"]} == {"accuracy_vs_sequential_tokens.png", "stages_by_level.png",
                                                         "sequential_token_reduction.png"}
    assert "No input has per-call timings" in (tmp_path / "report.md").read_text()


def test_reduction_needs_matched_items(tmp_path):
    seq, spr = synthetic_runs(tmp_path)
    series = load_inputs([seq, spr])
    # Rename every id of the baseline: nothing matches, so there is no reduction to show.
    for it in series[0].items:
        it.id = "other/" + it.id
    assert reduction_by_baseline_length(series[1], series[0]) == []
    assert build_report(series)["reduction"] == []
