"""`sprint eval` wiring: real orchestrator and baselines on a scripted backend, side-by-side runs, settings."""

import asyncio
import json
import re
from pathlib import Path

import pytest

from sprint.backends.base import ScriptedBackend
from sprint.eval.report import write_report
from sprint.eval.runner import EvalConfig, ResultLog, default_backend, evaluate, pair_specs, solver_configs
from sprint.format import tags as T
from sprint.testing.scripted import call_kind


def write_problems(path: Path, n: int = 5) -> Path:
    with open(path, "w") as f:
        for i in range(1, n + 1):
            f.write(json.dumps({"problem": f"What is {i} + {i}?", "answer": str(2 * i), "unique_id": f"toy/{i}.json",
                                "level": 1 + i % 3, "subject": "Toy"}) + "\n")
    return path


def _number(prompt: str) -> int:
    return int(re.findall(r"What is (\d+) \+", prompt)[-1])


def sprint_model(prompt: str) -> str:
    """Plans one prompt per question, executes it, then answers (wrongly for question 4)."""
    kind, stage, _ = call_kind(prompt)
    i = _number(prompt)
    if kind == "executor":
        return f"{i} + {i} = {2 * i}."
    if stage == 1:
        p = T.prompt_name(1, 1)
        return f"Add the two numbers.\n\n{T.open_tag(p)} Add {i} and {i}. {T.close_tag(p)}\n{T.close_tag(T.plan_name(1))}"
    answer = 2 * i if i != 4 else 7
    return f"{T.open_tag(T.FINAL_ANSWER)}\nSo the sum is \\boxed{{{answer}}}.\n{T.close_tag(T.FINAL_ANSWER)}"


def sequential_model(prompt: str) -> str:
    i = _number(prompt)
    return f"{i} plus {i} is {2 * i}, I am sure of it.\n{T.close_tag(T.THINK)}\n\nThe answer is \\boxed{{{2 * i}}}."


def scripted_backends(model, base_url, tokenizer):
    return ScriptedBackend(sprint_model if model == "toy-sprint" else sequential_model, delay_s=0.01)


def test_two_models_side_by_side_with_the_real_solvers(tmp_path):
    data = write_problems(tmp_path / "toy.jsonl")
    cfg = EvalConfig(task="math500", data=str(data), out=tmp_path / "run", methods=["sprint", "sequential"],
                     models=["toy-sprint", "toy-sequential"], concurrency=3, max_tokens=200,
                     summary_json=tmp_path / "s.json", progress=False)
    combined = asyncio.run(evaluate(cfg, scripted_backends))
    labels = [r["label"] for r in combined["runs"]]
    assert labels == ["toy-sprint-sprint", "toy-sequential-sequential"]
    spr, seq = combined["runs"]
    assert (spr["n"], spr["correct"], seq["correct"]) == (5, 4, 5)
    assert spr["mean_wall_clock_s"] > 0 and seq["mean_sequential_tokens"] > 0
    assert json.loads((tmp_path / "s.json").read_text()) == combined
    assert "| toy-sprint-sprint | sprint | toy-sprint | 5 |" in (tmp_path / "run" / "summary.md").read_text()

    settings = json.loads((tmp_path / "run" / labels[0] / "settings.json").read_text())
    assert settings["solver"] == "sprint.inference.orchestrator.solve"
    assert settings["solver_config"]["max_plan_tokens"] == 200 and settings["solver_config"]["seed"] == 0
    assert "Plan_i" in settings["prompts"]["system"]
    assert settings["layout"]["example_prompt"].startswith(T.open_tag(T.QUESTION) + "\nWhat is 1 + 1?")
    assert settings["task"]["source"] == str(data) and settings["items"]["n"] == 5
    assert settings["environment"]["packages"]["sprint-reasoning"]
    assert settings["backend"] == "ScriptedBackend" and settings["model"] == "toy-sprint"

    recs = {r["id"]: r for r in ResultLog(tmp_path / "run" / labels[0] / "results.jsonl").read()}
    r4 = recs["toy/4.json"]
    assert r4["answer"] == "7" and not r4["correct"] and r4["meta"] == {"level": 2, "subject": "Toy"}
    assert [c["role"] for c in r4["calls"]] == ["planner", "executor", "planner"]
    assert r4["stages"] == 1 and "run_meta" in r4 and "question" not in r4

    # The run folder reports, runtime figure included (it has per-call timings).
    report = write_report([tmp_path / "run"], tmp_path / "report", progress=False)
    assert {Path(p).name for p in report["figures"]} >= {"runtime.png", "sequential_token_reduction.png"}
    assert {r["label"] for r in report["runtime"]} == set(labels)

    # Run again: everything is done, nothing is solved again, and the summary is unchanged.
    calls = []

    def counting(model, url, tok):
        b = scripted_backends(model, url, tok)
        calls.append(b)
        return b

    again = asyncio.run(evaluate(cfg, counting))
    assert all(not b.calls for b in calls)
    assert [r["correct"] for r in again["runs"]] == [4, 5]


def test_single_pair_writes_into_the_out_folder(tmp_path):
    data = write_problems(tmp_path / "toy.jsonl", 3)
    cfg = EvalConfig(task="math500", data=str(data), out=tmp_path / "run", methods=["sot"], models=["x"],
                     n=2, progress=False)

    def sot_model(prompt):
        i = _number(prompt)
        if prompt.endswith("Outline:\n1."):
            return " Add the numbers.\n2. Check."
        if prompt.endswith("Final answer:"):
            return f" \\boxed{{{2 * i}}}"
        return f" {i} + {i} = {2 * i}"

    summary = asyncio.run(evaluate(cfg, lambda m, u, t: ScriptedBackend(sot_model)))
    assert summary["n"] == 2 and summary["accuracy"] == 1.0 and summary["method"] == "sot"
    assert (tmp_path / "run" / "results.jsonl").exists() and (tmp_path / "run" / "summary.json").exists()
    settings = json.loads((tmp_path / "run" / "settings.json").read_text())
    assert set(settings["prompts"]) == {"skeleton", "point", "answer"}


def test_pairs_broadcast_and_bad_combinations():
    cfg = EvalConfig(task="math500", out=Path("x"), methods=["sprint", "sequential"], models=["m"])
    assert [(p.model, p.method, p.base_urls) for p in pair_specs(cfg)] == [("m", "sprint", []),
                                                                           ("m", "sequential", [])]
    # One model: every server serves it.
    cfg.base_urls = ["http://a/v1", "http://b/v1", "http://c/v1"]
    assert all(p.base_urls == cfg.base_urls for p in pair_specs(cfg))
    two = EvalConfig(task="math500", out=Path("x"), methods=["sprint"], models=["a", "b"],
                     base_urls=["http://a/v1", "http://b/v1"])
    assert [p.base_urls for p in pair_specs(two)] == [["http://a/v1"], ["http://b/v1"]]
    two.base_urls = ["http://s/v1"]
    assert [p.base_urls for p in pair_specs(two)] == [["http://s/v1"], ["http://s/v1"]]
    two.base_urls = ["http://a/v1", "http://b/v1", "http://c/v1"]
    with pytest.raises(ValueError, match="--base-url is given 3 times for 2 models"):
        pair_specs(two)
    with pytest.raises(ValueError, match="--model is given 2 times"):
        pair_specs(EvalConfig(task="math500", out=Path("x"), methods=["sprint", "sc", "sot"], models=["a", "b"]))
    with pytest.raises(ValueError, match="--method must be one of"):
        pair_specs(EvalConfig(task="math500", out=Path("x"), methods=["cot"]))


def test_decoding_flags_and_typed_overrides():
    cfg = EvalConfig(task="math500", out=Path("x"), methods=["sc"], temperature=None, top_p=0.9, seed=3,
                     overrides={"sprint.max_stages": "6", "baseline.samples": "4", "sprint.eager": "false",
                                "baseline.wall_clock_s": "none"})
    sp, bl = solver_configs(cfg, "sc")
    assert bl.temperature == 0.7 and bl.top_p == 0.9 and bl.samples == 4 and bl.seed == 3
    assert bl.wall_clock_s is None
    assert sp.max_stages == 6 and sp.eager is False and sp.planner_top_p == 0.9
    sp, bl = solver_configs(EvalConfig(task="math500", out=Path("x"), methods=["sprint"], temperature=0.0,
                                       max_tokens=123), "sprint")
    assert (sp.planner_temperature, sp.max_exec_tokens, bl.max_tokens) == (0.0, 123, 123)
    for bad, msg in [({"sprint.nope": "1"}, "has no field 'nope'"), ({"max_stages": "1"}, "sprint.FIELD"),
                     ({"sprint.max_stages": "many"}, "not a valid int")]:
        with pytest.raises(ValueError, match=msg):
            solver_configs(EvalConfig(task="math500", out=Path("x"), methods=["sprint"], overrides=bad), "sprint")


@pytest.mark.integration
def test_sprint_eval_command_with_a_real_tiny_model(tiny_llama_dir, tmp_path, capsys):
    """The whole command on the in-process backend with a random tiny Llama: nothing is right, everything runs."""
    from sprint.cli import main

    data = write_problems(tmp_path / "toy.jsonl", 3)
    out = tmp_path / "run"
    argv = ["eval", "--task", "math500", "--data", str(data), "--n", "2", "--model", str(tiny_llama_dir),
            "--method", "sprint", "--method", "sequential", "--max-tokens", "12", "--set", "sprint.max_stages=2",
            "--concurrency", "2", "--out", str(out), "--summary-json", str(tmp_path / "s.json"), "--no-progress"]
    assert main(argv) == 0
    table = capsys.readouterr().out
    name = tiny_llama_dir.name
    assert f"| {name}-sprint | sprint |" in table and f"| {name}-sequential | sequential |" in table
    summary = json.loads((tmp_path / "s.json").read_text())
    for run in summary["runs"]:
        assert run["n"] == 2 and run["errors"] == 0 and run["correct"] == 0
    settings = json.loads((out / f"{name}-sprint" / "settings.json").read_text())
    assert settings["backend"] == "TransformersBackend" and settings["solver_config"]["max_stages"] == 2
    assert settings["layout"]["tokenizer"] is not None
    recs = ResultLog(out / f"{name}-sprint" / "results.jsonl").read()
    # Random weights write whitespace and tags (which the metrics do not count), but they do generate.
    assert all(sum(c["generated_tokens"] for c in r["calls"]) > 0 for r in recs)
    assert all(c["generated_tokens"] <= 12 for r in recs for c in r["calls"] if c["role"] == "planner")
    # Resuming a finished run redoes nothing and gives the same summary.
    assert main(argv) == 0
    assert json.loads((tmp_path / "s.json").read_text()) == summary


def test_countdown_side_by_side_summary_json(tmp_path):
    countdown = pytest.importorskip("sprint.tasks.countdown")

    def solver_model(prompt):
        """Answers every Countdown question with a real solution, in the sequential layout."""
        problem = countdown.parse_question(prompt)
        expr = countdown.first_solution(problem.numbers, problem.target)
        return f"searching...\n{T.close_tag(T.THINK)}\n\n\\boxed{{{expr}}}"

    cfg = EvalConfig(task="countdown", out=tmp_path / "run", methods=["sequential"], models=["a", "b"], n=4,
                     seed=7, summary_json=tmp_path / "s.json", progress=False)
    combined = asyncio.run(evaluate(cfg, lambda m, u, t: ScriptedBackend(solver_model)))
    for run in json.loads((tmp_path / "s.json").read_text())["runs"]:
        assert {"n", "accuracy", "accuracy_ci95", "mean_sequential_tokens", "mean_total_tokens",
                "mean_wall_clock_s"} <= set(run)
        assert run["n"] == 4 and run["accuracy"] == 1.0 and run["task"] == "countdown"
    settings = json.loads((tmp_path / "run" / "a-sequential" / "settings.json").read_text())
    assert settings["items"]["seed"] == 7 and settings["task"]["task"] == "countdown"
    assert len(combined["runs"]) == 2


def test_countdown_question_order_reaches_the_prompts_and_the_settings(tmp_path, capsys):
    countdown = pytest.importorskip("sprint.tasks.countdown")
    from sprint.cli import main

    seen = []

    def solver_model(prompt):
        problem = countdown.parse_question(prompt)
        seen.append(list(problem.numbers))
        return f"{T.close_tag(T.THINK)}\n\n\\boxed{{{countdown.first_solution(problem.numbers, problem.target)}}}"

    cfg = EvalConfig(task="countdown", out=tmp_path / "run", methods=["sequential"], models=["a"], n=5, seed=3,
                     task_options={"question_order": "sorted"}, progress=False)
    summary = asyncio.run(evaluate(cfg, lambda m, u, t: ScriptedBackend(solver_model)))
    assert summary["accuracy"] == 1.0 and seen and all(n == sorted(n, reverse=True) for n in seen)
    assert json.loads((tmp_path / "run" / "settings.json").read_text())["task"]["question_order"] == "sorted"
    capsys.readouterr()
    assert main(["eval", "--task", "math500", "--question-order", "sorted", "--method", "sequential",
                 "--out", str(tmp_path / "x")]) != 0
    assert "--question-order is a countdown option (the task is math500)" in capsys.readouterr().err



@pytest.mark.parametrize("argv, expected", [
    (["--model", "countdown-sprint", "--model", "countdown-sequential"], {"question_order": "sorted"}),
    (["--model", "countdown-sprint", "--question-order", "given"], {}),
    (["--model", "/my/model"], {}),
    (["--model", "/my/model", "--question-order", "sorted"], {"question_order": "sorted"}),
])
def test_eval_defaults_to_the_bundled_models_question_order(monkeypatch, tmp_path, argv, expected):
    """The bundled models were trained on sorted questions: `sprint eval` asks them so unless told; other models get
    the generated order."""
    import sprint.eval.runner as runner
    from sprint.cli import main

    seen = []
    monkeypatch.setattr(runner, "run_eval", lambda cfg: seen.append(cfg) or {"runs": []})
    monkeypatch.setattr(runner, "summary_table", lambda runs: "")
    methods = ["--method", "sprint"] * (len([a for a in argv if a == "--model"]))
    assert main(["eval", "--task", "countdown", *methods, *argv, "--out", str(tmp_path / "r")]) == 0
    assert seen[0].task_options == expected


def test_backend_options_reach_the_in_process_backend_and_the_settings(tiny_llama_dir, tmp_path, capsys):
    """--backend-mode, --max-batch and --decode-steps build the in-process backend with those keywords and are recorded; without them
    settings.json is as before (so older runs resume), and a served model refuses them."""
    from sprint.cli import main

    data = write_problems(tmp_path / "toy.jsonl", 3)
    base = ["eval", "--task", "math500", "--data", str(data), "--n", "2", "--model", str(tiny_llama_dir),
            "--method", "sequential", "--max-tokens", "6", "--no-progress"]
    assert main(base + ["--out", str(tmp_path / "a"), "--backend-mode", "fast", "--max-batch", "3"]) == 0
    settings = json.loads((tmp_path / "a" / "settings.json").read_text())
    assert settings["backend_options"] == {"exact": False, "cuda_graphs": False, "max_batch": 3}
    assert main(base + ["--out", str(tmp_path / "c"), "--backend-mode", "fast", "--decode-steps", "2"]) == 0
    assert json.loads((tmp_path / "c" / "settings.json").read_text())["backend_options"]["decode_steps"] == 2
    assert main(base + ["--out", str(tmp_path / "d"), "--decode-steps", "0"]) != 0
    assert "--decode-steps must be >= 1" in capsys.readouterr().err
    assert settings["engine"].startswith("TransformersBackend(") and "max_batch=3, exact=False)" in settings["engine"]
    assert main(base + ["--out", str(tmp_path / "b")]) == 0
    settings = json.loads((tmp_path / "b" / "settings.json").read_text())
    assert "backend_options" not in settings and "exact=True" in settings["engine"]   # the engine as it ran
    # A resume records the engine it ran with (a volatile setting: it does not block the resume).
    assert main(base + ["--out", str(tmp_path / "a"), "--backend-mode", "fast", "--max-batch", "3"]) == 0
    resumed = json.loads((tmp_path / "a" / "settings.json").read_text())
    assert resumed["resumes"][-1]["engine"] == resumed["engine"]
    # Resuming with another mode is another computation: refused, naming the difference.
    assert main(base + ["--out", str(tmp_path / "a"), "--backend-mode", "exact", "--max-batch", "3"]) == 2
    assert "backend_options" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "c"), "--max-batch", "0"]) == 2
    assert "--max-batch" in capsys.readouterr().err
    # graphs: the fast mode with CUDA graphs, which a CPU refuses with the backend's own message.
    assert main(base + ["--out", str(tmp_path / "d"), "--backend-mode", "graphs"]) == 2
    assert "cuda_graphs: needs the fast mode on a CUDA device" in capsys.readouterr().err
    with pytest.raises(ValueError, match="in-process backend"):
        default_backend("m", ["http://localhost:1/v1"], None, exact=False)


def test_backends_warm_up_before_the_timed_problems(tmp_path):
    """A backend with `warmup` (the in-process one on a GPU: CUDA graphs) is readied before any problem, for the
    sequences the run may hold at once (a planner and its executors per SPRINT problem); settings.json records it
    and a resumed run with another warm-up still resumes."""
    data = write_problems(tmp_path / "toy.jsonl", n=2)
    calls, solved = [], []

    class Warming(ScriptedBackend):
        async def warmup(self, sequences):
            calls.append((sequences, len(solved)))
            return {"graphs": 3, "seconds": 0.5 + len(calls), "sequences": sequences}

        async def generate(self, prompt, params):
            solved.append(prompt)
            return await super().generate(prompt, params)

    def make(model, base_url, tokenizer):
        return Warming(sprint_model if model == "toy-sprint" else sequential_model)

    cfg = EvalConfig(task="math500", data=str(data), out=tmp_path / "run", methods=["sprint", "sequential"],
                     models=["toy-sprint", "toy-sequential"], concurrency=3, max_tokens=200, progress=False)
    asyncio.run(evaluate(cfg, make))
    assert calls[0] == (24, 0) and calls[1][0] == 3   # 3 problems x 8 sequences, then 3 x 1; before any solve
    settings = json.loads((tmp_path / "run" / "toy-sprint-sprint" / "settings.json").read_text())
    assert settings["warmup"] == {"graphs": 3, "seconds": 1.5, "sequences": 24}
    asyncio.run(evaluate(cfg, make))   # resumes: the warm-up's figures are no setting
