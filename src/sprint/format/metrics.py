"""Token metrics of SPRINT and sequential trajectories: sequential tokens, total tokens, stages, prompts per stage.

Sequential tokens (the paper's latency measure): each stage's plan is cut after every `</prompt_i.j>` into
P_1..P_{k+1}; with executions E_1..E_k the stage costs max_j (|P_1|+...+|P_j| + |E_j|) with |E_{k+1}| = 0; the final
answer counts whole; stages add up. Only the format's own tags are left out of the counts (math such as `a<b>c`
is counted as written); prompt text is counted as planner output. Each piece is counted on its own with leading
and trailing whitespace removed.

With a finite number W of generation streams: the planner holds one stream while it writes its plan; each prompt
becomes ready when its closing tag is written and starts, in prompt order, on the first free stream. W = 1 is
fully sequential (= total tokens); W = infinity is the paper's number.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Iterable, Protocol, Sequence

from sprint.format.sequential import SequentialTrace
from sprint.format.trajectory import Trajectory


class TokenCounter(Protocol):
    """Counts the tokens of each text in a batch."""

    def __call__(self, texts: Sequence[str]) -> list[int]: ...


class HFTokenCounter:
    """Counts tokens with a Hugging Face tokenizer (no special tokens), given by hub name or local directory."""

    def __init__(self, tokenizer_or_name):
        if isinstance(tokenizer_or_name, str):
            from transformers import AutoTokenizer  # heavy import: only when a tokenizer is needed

            tokenizer_or_name = AutoTokenizer.from_pretrained(tokenizer_or_name)
        self.tokenizer = tokenizer_or_name

    def __call__(self, texts: Sequence[str]) -> list[int]:
        texts = list(texts)
        if not texts:
            return []
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [len(x) if t else 0 for x, t in zip(ids, texts)]


def whitespace_counter(texts: Sequence[str]) -> list[int]:
    """A tokenizer-free counter (whitespace-separated words); for tests and quick looks only."""
    return [len(t.split()) for t in texts]


@dataclass
class StageCost:
    index: int
    plan_segments: list[int]   # |P_1| .. |P_{k+1}|
    executions: list[int]      # |E_1| .. |E_k|

    @property
    def prompts(self) -> int:
        return len(self.executions)

    @property
    def total(self) -> int:
        return sum(self.plan_segments) + sum(self.executions)

    def latency(self, streams: float = math.inf) -> int:
        """Tokens on the critical path of this stage with `streams` concurrent generation streams."""
        ready, acc = [], 0
        for p in self.plan_segments[: len(self.executions)]:
            acc += p
            ready.append(acc)
        plan_done = sum(self.plan_segments)
        if not self.executions:
            return plan_done
        if streams == math.inf or streams >= len(self.executions) + 1:
            return max(plan_done, max(r + e for r, e in zip(ready, self.executions)))
        w = int(streams)
        if w < 1:
            raise ValueError(f"executors must be >= 1, got {streams}")
        # The planner holds one stream until its plan is written; executors take free streams in prompt order.
        free = [0] * (w - 1) + [plan_done]
        heapq.heapify(free)
        finish = plan_done
        for r, e in zip(ready, self.executions):
            t = heapq.heappop(free)
            end = max(t, r) + e
            finish = max(finish, end)
            heapq.heappush(free, end)
        return finish


@dataclass
class TrajectoryMetrics:
    sequential_tokens: int
    total_tokens: int
    stages: int
    prompts_per_stage: list[int] = field(default_factory=list)
    final_answer_tokens: int = 0
    stage_costs: list[StageCost] = field(default_factory=list)

    @property
    def mean_prompts_per_stage(self) -> float:
        return sum(self.prompts_per_stage) / len(self.prompts_per_stage) if self.prompts_per_stage else 0.0

    def sequential_tokens_with(self, executors: float) -> int:
        """Sequential tokens with a finite number of generation streams (see module docstring)."""
        extra = self.total_tokens - sum(s.total for s in self.stage_costs)  # preamble + final answer
        return extra + sum(s.latency(executors) for s in self.stage_costs)


def trajectory_metrics(traj: Trajectory, counter: TokenCounter) -> TrajectoryMetrics:
    """All token metrics of a SPRINT trajectory, counting every piece in one tokenizer call."""
    texts: list[str] = [traj.preamble.strip(), (traj.final_answer or "").strip()]
    layout: list[tuple[int, int]] = []
    for stage in traj.stages:
        segs = stage.plan.segments()
        for before, prompt in segs:
            texts.append(before.strip())
            texts.append(prompt.text.strip() if prompt else "")
        n_exec = len(stage.executions)
        texts.extend(e.text.strip() for e in stage.executions)
        layout.append((len(segs), n_exec))
    counts = counter(texts)
    it = iter(counts[2:])
    costs = []
    for stage, (n_segs, n_exec) in zip(traj.stages, layout):
        segs = [next(it) + next(it) for _ in range(n_segs)]
        execs = [next(it) for _ in range(n_exec)]
        # Executions beyond the number of prompts (malformed text) start when the plan ends.
        if len(execs) > len(segs) - 1:
            segs = segs[:-1] + [0] * (len(execs) - (len(segs) - 1)) + segs[-1:]
        costs.append(StageCost(stage.index, segs, execs))
    pre, final = counts[0], counts[1]
    total = pre + final + sum(c.total for c in costs)
    seq = pre + final + sum(c.latency() for c in costs)
    return TrajectoryMetrics(sequential_tokens=seq, total_tokens=total, stages=len(costs),
                             prompts_per_stage=[len(s.prompts) for s in traj.stages], final_answer_tokens=final,
                             stage_costs=costs)


def sequential_metrics(trace: SequentialTrace, counter: TokenCounter) -> TrajectoryMetrics:
    """A sequential trace: every token is on the critical path."""
    n = sum(counter([trace.thinking.strip(), trace.answer.strip()]))
    return TrajectoryMetrics(sequential_tokens=n, total_tokens=n, stages=0)


def load_token_counter(name_or_path: str) -> HFTokenCounter:
    """A token counter from a Hugging Face tokenizer name or local directory."""
    return HFTokenCounter(name_or_path)


def mean(xs: Iterable[float]) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")

