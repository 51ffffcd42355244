"""`sprint countdown data`: the files it writes, byte-identical for the same config, and their contents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sprint.cli import main
from sprint.format import parse, parse_sequential
from sprint.tasks.countdown.data import CountdownDataConfig, load_data_config

REPO = Path(__file__).resolve().parents[2]
SMALL = """seed: 3
train: 40
val: 10
test: 12
trace:
  width: 4
  max_branches: 12
"""


def _files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_data_command_is_reproducible_and_complete(tmp_path, capsys):
    cfg = tmp_path / "data.yaml"
    cfg.write_text(SMALL)
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["countdown", "data", "--config", str(cfg), "--out", str(a), "--no-progress"]) == 0
    assert main(["countdown", "data", "--config", str(cfg), "--out", str(b), "--no-progress"]) == 0
    assert "training problems kept" in capsys.readouterr().out
    fa, fb = _files(a), _files(b)
    assert fa == fb
    for name in ["train.jsonl", "val.jsonl", "test.jsonl", "sprint_train.jsonl", "sequential_train.jsonl",
                 "sprint_val.jsonl", "sequential_val.jsonl", "stats.json", "tokenizer/tokenizer.json"]:
        assert name in fa, name

    problems = _read(a / "train.jsonl")
    assert len(problems) == 40 and problems[0]["id"] == "countdown-train-3-000000"
    all_sprint, seq = _read(a / "sprint_train.jsonl"), _read(a / "sequential_train.jsonl")
    sprint = [r for r in all_sprint if r.get("role", "planner") == "planner"]
    executors = [r for r in all_sprint if r.get("role") == "executor"]
    assert [r["id"] for r in sprint] == [r["id"] for r in seq] and len(sprint) > 30
    for r in sprint:
        assert set(r) >= {"id", "format", "question", "answer", "messages"}
        parse(r["messages"][-1]["content"], strict=True)
    # Each SPRINT record is followed by one executor record per prompt of its trajectory.
    expected = [f"{r['id']}#exec-{p.id}" for r in sprint for p in parse(r["messages"][-1]["content"]).prompts]
    assert [r["id"] for r in executors] == expected
    assert all(r["messages"][-1]["content"].endswith("</execution_" + r["id"].split("#exec-")[1] + ">")
               for r in executors)
    for r in seq:
        assert parse_sequential(r["messages"][-1]["content"]).answer.startswith("\\boxed{")

    stats = json.loads((a / "stats.json").read_text())
    train = stats["splits"]["train"]
    assert train["problems"] == 40 and train["kept"] == len(sprint)
    assert train["records"] == {"sprint": len(sprint), "sprint_executor": len(executors), "sequential": len(seq)}
    assert train["record_tokens"]["sprint_executor"]["n"] == len(executors)
    loss, whole = train["sprint_executor_loss_tokens"], train["record_tokens"]["sprint_executor"]
    assert loss["n"] == len(executors) and 0 < loss["mean"] < whole["mean"] and loss["max"] < whole["max"]
    assert train["kept"] + sum(train["dropped"].values()) == 40
    assert 0 < train["ratio"]["all"]["ratio_of_means"] < 1.5
    base = stats["test_search_baseline"]
    assert base["n"] == 12 and base["solved_unlimited"] == 1.0
    assert base["solved_within"]["128"] <= base["solved_within"]["2048"]
    assert set(base["solved_within_mean_sequential_train_tokens"]) == {"budget", "solved"}

    # Options override the file; a different seed gives different problems.
    c = tmp_path / "c"
    assert main(["countdown", "data", "--config", str(cfg), "--out", str(c), "--seed", "4", "--train", "5",
                 "--val", "2", "--test", "2", "--no-progress"]) == 0
    assert len(_read(c / "train.jsonl")) == 5 and _read(c / "train.jsonl")[0]["id"] == "countdown-train-4-000000"


def test_shipped_config_loads():
    cfg = load_data_config(REPO / "configs" / "countdown-data.yaml")
    assert cfg.trace.context == 4096 and cfg.trace.check == "compare" and cfg.trace.executor_pick == "uniform" and cfg.train >= 50000
    assert cfg.trace.numbers == "digits" and cfg.trace.order == "canonical"


def test_config_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown key"):
        CountdownDataConfig.from_dict({"trian": 5})
    with pytest.raises(ValueError, match="in trace"):
        CountdownDataConfig.from_dict({"trace": {"wdth": 4}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("difficulty: easy\n")
    assert main(["countdown", "data", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "difficulty" in capsys.readouterr().err
    assert main(["countdown", "data", "--config", str(tmp_path / "missing.yaml")]) == 2


def test_executor_views_cap_keeps_the_solving_branch(tmp_path):
    from sprint.tasks.countdown.data import CountdownDataConfig, build_countdown_data
    from sprint.tasks.countdown.traces import TraceConfig

    def build(views, out):
        cfg = CountdownDataConfig(seed=4, train=40, val=4, test=4,
                                  trace=TraceConfig(width=4, executor_views=views, context=4096))
        build_countdown_data(cfg, tmp_path / out, progress=False)
        return [json.loads(line) for line in (tmp_path / out / "sprint_train.jsonl").read_text().splitlines()]

    full, capped = build(None, "all"), build(1, "one")
    assert [r["id"] for r in full if r.get("role") != "executor"] == [r["id"] for r in capped
                                                                      if r.get("role") != "executor"]
    execs = [r for r in capped if r.get("role") == "executor"]
    per_stage = {}
    for r in execs:
        key = r["id"].rsplit(".", 1)[0]
        per_stage[key] = per_stage.get(key, 0) + 1
    assert set(per_stage.values()) == {1}
    full_ids = {r["id"] for r in full}
    assert all(r["id"] in full_ids for r in execs)   # a subset of the same records, same bytes
    # Every stage with a branch that found a solution keeps such a branch (several branches of a stage may).
    solves = lambda r: "Solution " in r["messages"][-1]["content"][r["completion_start"]:]
    stages = {r["id"].rsplit(".", 1)[0] for r in full if r.get("role") == "executor" and solves(r)}
    assert stages and stages == {r["id"].rsplit(".", 1)[0] for r in execs if solves(r)}


def test_uniform_executor_pick_keeps_solutions_at_their_base_rate(tmp_path):
    from sprint.tasks.countdown.data import build_countdown_data
    from sprint.tasks.countdown.traces import TraceConfig

    solves = lambda r: "Solution " in r["messages"][-1]["content"][r["completion_start"]:]

    def executors(pick, views, out):
        cfg = CountdownDataConfig(seed=4, train=60, val=4, test=4,
                                  trace=TraceConfig(width=4, executor_views=views, executor_pick=pick))
        build_countdown_data(cfg, tmp_path / out, progress=False)
        return [r for r in _read(tmp_path / out / "sprint_train.jsonl") if r.get("role") == "executor"]

    every, first, uniform = executors("uniform", None, "all"), executors("solution_first", 1, "f"), \
        executors("uniform", 1, "u")
    assert len(first) == len(uniform) < len(every)
    assert {r["id"] for r in uniform} <= {r["id"] for r in every}
    rate = lambda recs: sum(map(solves, recs)) / len(recs)
    # Solution-first over-represents hits; by hash alone the kept records are a plain sample of the branches.
    assert rate(first) > rate(uniform) and rate(first) > rate(every)
    assert {r["id"] for r in first if not solves(r)} & {r["id"] for r in uniform}
    with pytest.raises(ValueError, match="executor_pick"):
        TraceConfig(executor_pick="best")


def test_data_command_takes_key_value_overrides(tmp_path, capsys):
    cfg = tmp_path / "data.yaml"
    cfg.write_text(SMALL)
    out = tmp_path / "o"
    assert main(["countdown", "data", "--config", str(cfg), "--out", str(out), "--no-progress", "train=6",
                 "trace.executor_pick=uniform", "trace.executor_views=1", "--test", "3"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["config"]["train"] == 6 and stats["config"]["test"] == 3 and stats["config"]["val"] == 10
    assert stats["config"]["trace"]["executor_pick"] == "uniform" and stats["config"]["trace"]["width"] == 4
    capsys.readouterr()
    for bad, named in [("trace.wdth=3", "wdth"), ("trian=3", "trian"), ("width", "KEY=VALUE"),
                       ("model.x=1", "KEY=VALUE"), ("trace.executor_pick=best", "executor_pick")]:
        assert main(["countdown", "data", "--config", str(cfg), "--out", str(out), bad]) == 2, bad
        assert named in capsys.readouterr().err, bad


def test_workers_give_the_same_bytes(tmp_path):
    from sprint.tasks.countdown.data import CountdownDataConfig, build_countdown_data
    from sprint.tasks.countdown.traces import TraceConfig

    cfg = CountdownDataConfig(seed=5, train=60, val=6, test=6, trace=TraceConfig(width=4, executor_views=2))
    build_countdown_data(cfg, tmp_path / "one", progress=False)
    build_countdown_data(cfg, tmp_path / "two", progress=False, workers=2)
    for name in ("sprint_train.jsonl", "sequential_train.jsonl", "stats.json", "sprint_val.jsonl"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_check_option_reaches_the_records_and_stats(tmp_path):
    cfg = tmp_path / "data.yaml"
    cfg.write_text(SMALL)
    out = tmp_path / "o"
    assert main(["countdown", "data", "--config", str(cfg), "--out", str(out), "--no-progress",
                 "--check", "compare"]) == 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["config"]["trace"]["check"] == "compare"
    for rec in _read(out / "sequential_train.jsonl"):
        thinking = parse_sequential(rec["messages"][-1]["content"]).thinking
        hit = [ln for ln in thinking.splitlines() if ln.endswith(f" {rec['target']}=")]
        assert len(hit) == 1 and f"] {rec['target']}: " in hit[0], rec["id"]
