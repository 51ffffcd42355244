"""Countdown first-move orders (`trace.order`): the canonical enumeration, strict parsing of both orders' traces, and
the data command with `order: canonical`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sprint.cli import main
from sprint.format import parse, parse_sequential, render_body
from sprint.tasks.countdown.data import load_data_config
from sprint.tasks.countdown.expr import check_answer
from sprint.tasks.countdown.problems import Problem, generate
from sprint.tasks.countdown.search import first_moves, search, sort_state
from sprint.tasks.countdown.traces import TraceConfig, build_records, build_traces

REPO = Path(__file__).resolve().parents[2]


def _reference_canonical(numbers, max_value=1000):
    """The documented order, written independently of the search: values largest first, pairs (i<j) in order,
    operations + - * /, illegal moves skipped, a move whose resulting values equal an earlier move's skipped."""
    vals = sorted(numbers, reverse=True)
    out, seen = [], set()
    for i in range(len(vals)):
        for j in range(i + 1, len(vals)):
            a, b = vals[i], vals[j]
            rest = [v for k, v in enumerate(vals) if k not in (i, j)]
            for op, r, ok in (("+", a + b, True), ("-", a - b, a > b), ("*", a * b, True),
                              ("/", a // b, b > 1 and a % b == 0)):
                if not ok or r > max_value or r <= 0:
                    continue
                state = tuple(sorted(rest + [r], reverse=True))
                if state not in seen:
                    seen.add(state)
                    out.append(f"{a}{op}{b}={r}")
    return out


def test_canonical_order_of_a_known_problem():
    s = search(Problem((88, 9, 33, 72), 44), order="canonical")
    assert [m.text for m, _ in s.ranked] == [
        "88+72=160", "88-72=16", "88+33=121", "88-33=55", "88+9=97", "88-9=79", "88*9=792", "72+33=105",
        "72-33=39", "72+9=81", "72-9=63", "72*9=648", "72/9=8", "33+9=42", "33-9=24", "33*9=297"]
    assert s.sequential_text().splitlines()[:3] == ["Reach 44 from [88 72 33 9]", "Explore 88+72=160", "[160 33 9]"]
    assert s.solved_at == 7 and check_answer(s.solution, (88, 9, 33, 72), 44).ok
    # Deterministic: the same search twice, and independent of the order the question lists the numbers in.
    again = search(Problem((9, 33, 72, 88), 44), order="canonical")
    assert again.sequential_text() == s.sequential_text() and again.solution == s.solution


def test_canonical_order_skips_moves_leaving_an_earlier_state():
    # 4-2=2 and 4/2=2 both leave [3 2 1]; 4*1, 3*1 and 2*1 all leave [4 3 2]: only the first of each is kept.
    texts = [m.text for m, _ in first_moves(sort_state([(n, str(n)) for n in (4, 3, 2, 1)]), 10, 1000, "canonical")]
    assert texts == ["4+3=7", "4-3=1", "4*3=12", "4+2=6", "4-2=2", "4*2=8", "4+1=5", "4-1=3", "4*1=4",
                     "3+2=5", "3-2=1", "3*2=6", "3+1=4", "3-1=2", "2+1=3", "2-1=1"]
    assert texts == _reference_canonical((4, 3, 2, 1))


def test_canonical_order_matches_the_documented_enumeration():
    for p in generate("train", 200, 7):
        s = search(p, max_branches=10**6, order="canonical")
        assert [m.text for m, _ in s.ranked] == _reference_canonical(p.numbers), p.key
        # The heuristic order is a permutation of the same legal moves (it keeps duplicates of a state).
        h = search(p, max_branches=10**6, order="heuristic")
        assert set(m.text for m, _ in s.ranked) <= set(m.text for m, _ in h.ranked)


@pytest.mark.parametrize("order", ["heuristic", "canonical"])
def test_traces_of_both_orders_parse_back_strictly(order):
    kept = 0
    for i, p in enumerate(generate("train", 40, 5)):
        t = build_traces(p, TraceConfig(width=6, max_branches=16, order=order))
        if t.reason:
            continue
        kept += 1
        sprint_rec, seq_rec, *_ = build_records(f"x{i}", t)
        body = sprint_rec["messages"][-1]["content"]
        traj = parse(body, strict=True)
        assert render_body(traj) == body
        assert traj.final_answer == "\\boxed{" + t.search.solution + "}"
        # The prompts, stage after stage, are the first moves in search order.
        assert [pr.text.strip() for pr in traj.prompts] == [f"Explore {m.text}" for m, _ in
                                                             t.search.ranked[:len(traj.prompts)]]
        seq = parse_sequential(seq_rec["messages"][-1]["content"])
        assert seq.thinking == t.sequential_thinking and seq.answer == traj.final_answer
    assert kept > 30


def test_order_errors_name_the_field():
    with pytest.raises(ValueError, match="trace.order"):
        TraceConfig(order="best")
    with pytest.raises(ValueError, match="trace.order"):
        search(Problem((1, 2, 3, 4), 10), order="random")


def test_shipped_config_uses_the_canonical_order():
    assert load_data_config(REPO / "configs" / "countdown-data.yaml").trace.order == "canonical"
    assert TraceConfig().order == "canonical"


def _files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_data_command_with_canonical_order_is_reproducible(tmp_path, capsys):
    small = "seed: 2\ntrain: 30\nval: 6\ntest: 8\ntrace:\n  width: 4\n  max_branches: 12\n"
    (tmp_path / "h.yaml").write_text(small + "  order: heuristic\n")
    (tmp_path / "c.yaml").write_text(small + "  order: canonical\n")
    run = lambda cfg, out, *extra: main(["countdown", "data", "--config", str(tmp_path / cfg), "--out",
                                         str(tmp_path / out), "--no-progress", *extra])
    assert run("c.yaml", "a") == 0 and run("c.yaml", "b") == 0
    assert run("h.yaml", "flag", "--order", "canonical") == 0  # the option overrides the file
    assert run("h.yaml", "heur") == 0
    a = _files(tmp_path / "a")
    assert a == _files(tmp_path / "b") == _files(tmp_path / "flag")
    stats = json.loads(a["stats.json"])
    assert stats["config"]["trace"]["order"] == "canonical"
    heur = _files(tmp_path / "heur")
    assert heur["train.jsonl"] == a["train.jsonl"]  # same problems ...
    assert heur["sprint_train.jsonl"] != a["sprint_train.jsonl"]  # ... searched in another order
    for line in a["sprint_train.jsonl"].decode().splitlines():
        rec = json.loads(line)
        if rec.get("role", "planner") != "planner":
            continue
        prompts = [pr.text.strip() for pr in parse(rec["messages"][-1]["content"], strict=True).prompts]
        p = Problem(tuple(rec["numbers"]), rec["target"])
        assert prompts == [f"Explore {m}" for m in _reference_canonical(p.numbers)[:len(prompts)]]
    with pytest.raises(SystemExit):
        run("h.yaml", "bad", "--order", "random")
    capsys.readouterr()
