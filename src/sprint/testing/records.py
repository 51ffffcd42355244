"""Real training records built offline from the read-only reference data in ../shared, for tests and benchmarks.

* SPRINT records: the paper's released curated training samples (`curation/trajectory_data/*.txt`), parsed and
  re-rendered with `<think>` as our curated records are.
* Sequential records: the shortest correct DeepSeek-R1-Distill-Qwen-7B traces on MATH-500 (`r1_traces`).

Both have the exact shape `sprint curate` writes (`id`, `format`, `question`, `answer`, `messages`), with messages
from `sprint.format.layout.messages`.
"""

from __future__ import annotations

import json
from pathlib import Path

REFERENCE_TRAJECTORIES = Path("fixtures") / "sprint_reference" / "curation" / "trajectory_data"
R1_TRACES = Path("data") / "r1_traces" / "math500_r1_distill_qwen7b.jsonl"


def reference_sprint_records(shared_dir: str | Path) -> list[dict]:
    """One SPRINT record per released curated sample, in file-name order."""
    from sprint.format import layout, parse, render_body

    folder = Path(shared_dir) / REFERENCE_TRAJECTORIES
    paths = sorted(folder.glob("*.txt"))
    if not paths:
        raise FileNotFoundError(f"no reference trajectories in {folder}")
    out = []
    for path in paths:
        traj = parse(path.read_text(encoding="utf-8"))
        if not traj.ok:
            raise ValueError(f"{path}: {traj.diagnostics[0]}")
        traj.think = True  # curated records wrap the whole SPRINT body in <think>, as R1-style models write it
        body = render_body(traj)
        out.append({"id": path.stem, "format": "sprint", "question": traj.question, "answer": traj.final_answer,
                    "messages": layout.messages(traj.question, "sprint", body)})
    return out


def r1_sequential_records(shared_dir: str | Path, n: int = 2) -> list[dict]:
    """Sequential records of the `n` shortest correct R1-distill traces."""
    from sprint.format import layout, parse_sequential, render_sequential_body

    path = Path(shared_dir) / R1_TRACES
    if not path.is_file():
        raise FileNotFoundError(f"R1 traces not found: {path}")
    rows = [json.loads(line) for line in path.open(encoding="utf-8") if line.strip()]
    rows = sorted((r for r in rows if r.get("is_correct")), key=lambda r: len(r["full_response"]))[:n]
    return [{"id": r["item_id"], "format": "sequential", "question": r["problem"], "answer": r["ground_truth"],
             "messages": layout.messages(r["problem"], "sequential",
                                         render_sequential_body(parse_sequential(r["full_response"])))}
            for r in rows]
