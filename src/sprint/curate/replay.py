"""Replay of the released SPRINT curation artifacts through our parsing, folding, packing and rendering.

The reference directory holds, per problem N, the step-extraction answer (`component_separation_output_*/
component_separation_N.txt`, line ranges), the same steps with text inlined (`component_inline_*/
component_inline_N.txt`), the parent dictionary (`created_dags_*/created_dag_N.json`) and, for the problems the
release kept, the final training sample (`trajectory_data/trajectory_data_N.txt`). The original traces are not
released, so step texts come from the inline files; the release drops comments (and so does the replay).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

from sprint.curate.artifacts import load_dag, load_steps
from sprint.curate.packing import (DEFAULT_MAX_STAGES, DEFAULT_MIN_RATIO, Packing, Step, fold_short_executions, pack,
                                   to_trajectory)


@dataclass
class ReplayResult:
    """One reference problem: our packing, and how our rendering compares with the released sample (if any)."""

    problem: int
    steps: list[Step]
    packing: Packing
    reference: str | None = None
    rendered: str | None = None
    reference_stages: dict[int, int] = field(default_factory=dict)

    @property
    def identical(self) -> bool | None:
        return None if self.reference is None else self.rendered == self.reference

    def diff_summary(self) -> str:
        """Bytes that differ between our rendering and the released sample (UTF-8), with the first differing line."""
        if self.reference is None:
            return "no reference sample"
        a, b = self.reference.encode(), (self.rendered or "").encode()
        if a == b:
            return f"identical ({len(a)} bytes)"
        same = sum(m.size for m in difflib.SequenceMatcher(None, a, b, autojunk=False).get_matching_blocks())
        first = next((ln for ln in difflib.unified_diff(self.reference.splitlines(), (self.rendered or "").splitlines(),
                                                        lineterm="", n=0) if ln[:1] in "+-" and ln[:3] not in ("+++", "---")), "")
        return f"{len(a) - same} of {len(a)} reference bytes differ ({len(b)} rendered); first: {first[:80]!r}"


def _find(ref: Path, pattern: str) -> Path | None:
    hits = sorted(ref.glob(pattern))
    return hits[0] if hits else None


def problems(reference_dir: str | Path) -> list[int]:
    ref = Path(reference_dir)
    return sorted(int(p.stem.rsplit("_", 1)[1]) for p in ref.glob("component_separation_output_*/component_separation_*.txt"))


def stages_in_reference(steps: list[Step], sample: str) -> dict[int, int]:
    """Where each step sits in a released sample: executed steps by their execution text, plan-only steps by
    their plan text (the first stage whose plan contains it). Steps not found are left out."""
    from sprint.format import parse

    traj = parse(sample)
    found: dict[int, int] = {}
    for s in steps:
        for st in traj.stages:
            if s.has_execution:
                if any(e.text.strip() == (s.execution or "").strip() for e in st.executions):
                    found[s.id] = st.index
                    break
            elif s.plan.strip() and s.plan.strip() in st.plan.text:
                found[s.id] = st.index
                break
    return found


def replay_problem(reference_dir: str | Path, n: int, *, fold_threshold: int = 3, width: int | None = None,
                   min_ratio: float = DEFAULT_MIN_RATIO, max_stages: int = DEFAULT_MAX_STAGES) -> ReplayResult:
    from sprint.format import parse, render

    ref = Path(reference_dir)
    sep = _find(ref, f"component_separation_output_*/component_separation_{n}.txt")
    if sep is None:
        raise FileNotFoundError(f"{ref}: no component_separation_{n}.txt")
    inline = _find(ref, f"component_inline_*/component_inline_{n}.txt")
    dag_path = _find(ref, f"created_dags_*/created_dag_{n}.json")
    if dag_path is None:
        raise FileNotFoundError(f"{ref}: no created_dag_{n}.json")
    steps = fold_short_executions(load_steps(sep, inline=inline), fold_threshold)
    packing = pack(steps, load_dag(dag_path), width, min_ratio=min_ratio, max_stages=max_stages)
    result = ReplayResult(problem=n, steps=steps, packing=packing)
    sample = _find(ref, f"trajectory_data/trajectory_data_{n}.txt")
    if sample is not None:
        result.reference = sample.read_text(encoding="utf-8")
        head = parse(result.reference)
        traj = to_trajectory(head.question, steps, packing, head.final_answer, think=False, comments=False)
        result.rendered = render(traj)
        result.reference_stages = stages_in_reference(steps, result.reference)
    return result


def replay(reference_dir: str | Path, **kw) -> list[ReplayResult]:
    return [replay_problem(reference_dir, n, **kw) for n in problems(reference_dir)]


def report(results: list[ReplayResult]) -> str:
    """A text table: stages per step, ratio, verdict and the comparison with the released sample."""
    out = []
    for r in results:
        p = r.packing
        stages = " ".join(f"{sid}:{p.stages[sid]}{'' if s.has_execution else 'p'}" for sid, s in
                          ((s.id, s) for s in r.steps))
        verdict = "kept" if p.kept else f"dropped ({p.reason})"
        out.append(f"problem {r.problem}: {p.num_stages} stages, {p.executed} executions, ratio {p.ratio:.3f}, "
                   f"{verdict}")
        out.append(f"  stage per step (p = plan-only): {stages}")
        if r.reference is not None:
            agree = sum(1 for sid, st in r.reference_stages.items() if p.stages[sid] == st)
            out.append(f"  reference: stages agree for {agree}/{len(r.steps)} steps "
                       f"({len(r.reference_stages)} located); render: {r.diff_summary()}")
    return "\n".join(out)


def replay_report(reference_dir: str | Path, **kw) -> str:
    """Replay every reference problem and return the text report (what `sprint curate replay` prints)."""
    return report(replay(reference_dir, **kw))
