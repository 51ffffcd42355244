"""Real curated records for the training tests: the paper's released SPRINT samples and R1 sequential traces.

The fixtures are read in place from ../shared (tests skip when it is absent); callers write what they build into
pytest tmp dirs. A plain module (not conftest) so test files can import it without clashing with tests/conftest.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
TRAJECTORIES = SHARED / "fixtures" / "sprint_reference" / "curation" / "trajectory_data"
R1_TRACES = SHARED / "data" / "r1_traces" / "math500_r1_distill_qwen7b.jsonl"


def sprint_records() -> list[dict]:
    from sprint.format import layout, parse, render_body

    if not TRAJECTORIES.is_dir():
        pytest.skip(f"shared fixtures not found at {TRAJECTORIES}")
    out = []
    for path in sorted(TRAJECTORIES.glob("*.txt")):
        traj = parse(path.read_text(encoding="utf-8"))
        assert traj.ok, traj.diagnostics
        traj.think = True  # curated records wrap the whole SPRINT body in <think>, as R1-style models write it
        body = render_body(traj)
        out.append({"id": path.stem, "format": "sprint", "question": traj.question, "answer": traj.final_answer,
                    "messages": layout.messages(traj.question, "sprint", body)})
    return out


def sequential_records(n: int = 2) -> list[dict]:
    """The `n` shortest correct R1-distill traces, rendered as sequential records."""
    from sprint.format import layout, parse_sequential, render_sequential_body

    if not R1_TRACES.is_file():
        pytest.skip(f"shared data not found at {R1_TRACES}")
    rows = [json.loads(line) for line in R1_TRACES.open(encoding="utf-8")]
    rows = sorted((r for r in rows if r.get("is_correct")), key=lambda r: len(r["full_response"]))[:n]
    out = []
    for r in rows:
        trace = parse_sequential(r["full_response"])
        out.append({"id": r["item_id"], "format": "sequential", "question": r["problem"],
                    "answer": r["ground_truth"],
                    "messages": layout.messages(r["problem"], "sequential", render_sequential_body(trace))})
    return out


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path
