"""`sprint demo` end to end on the bundled models (real models, real parsing, CPU)."""

import re

import pytest

from sprint.cli import main


@pytest.mark.integration
def test_demo_runs_both_bundled_models_offline(capsys):
    rc = main(["demo", "--no-live", "Using the numbers [12, 3, 40, 8], create an equation that equals 44."])
    out = capsys.readouterr().out
    assert rc == 0
    assert "countdown-sprint" in out and "countdown-sequential" in out
    assert "SPRINT vs sequential" in out and "wall-clock" in out
    assert "Using the numbers [40, 12, 8, 3]" in out  # asked with the numbers largest first (sprint.models)
    # Both trajectories are shown (their last part). Whether the SPRINT planner reaches <Final_answer> on this problem
    # is the model's business, not the demo's: the third bundled pair's planner loops on "Dead" here.
    assert "countdown-sprint: trajectory" in out and "countdown-sequential: trajectory" in out
    assert out.count("</think>") >= 2
    # Each model's answer and verdict on a line of its own (an answer column was squeezed to nothing at 80 columns).
    for model in ("countdown-sprint", "countdown-sequential"):
        assert re.search(rf"^{model}: .+ \((correct|wrong.*)\)$", out, re.M), model
    assert "sprint eval --task countdown" in out   # one problem says little: the command for many


def test_demo_points_at_an_eval_command_that_parses():
    import shlex

    from sprint.cli import build_parser
    from sprint.inference.demo import eval_command

    argv = shlex.split(eval_command(3))
    assert argv[0] == "sprint"
    args = build_parser().parse_args(argv[1:])
    assert args.seed == 3 and args.n == 100 and args.task == "countdown"
    assert args.model == ["countdown-sprint", "countdown-sequential"]
    assert args.method == ["sprint", "sequential"]
