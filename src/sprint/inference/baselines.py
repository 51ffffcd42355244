"""The baselines SPRINT is compared with, on the same backends and with the same `RunResult`:

* `sequential`: one generation in the sequential layout (the paper's RFT / base-model setting).
* `self-consistency` (`sc`): N sequential samples in parallel; the answer most samples agree on, where two answers
  agree when the grader's math-verify equivalence says so.
* `skeleton-of-thought` (`sot`): one call writes a numbered skeleton of the solution, every point is expanded in
  parallel, a last call reads the expanded points and answers. Prompts are our own. The run is recorded in the
  SPRINT format (the skeleton is plan 1, points are its prompts, expansions its executions) so the same metrics
  and renderers apply.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import asdict, dataclass
from typing import Awaitable, Callable

from sprint.backends.base import Backend, GenerationParams
from sprint.eval.grading import extract_answer, is_equiv_async
from sprint.format import layout, render, sequential_metrics, trajectory_metrics
from sprint.format.sequential import SequentialTrace, parse_sequential, render_sequential
from sprint.format.trajectory import Execution, Plan, Prompt, Stage, Trajectory
from sprint.inference.calls import CallLog, RunEvent, RunObserver
from sprint.inference.interpret import Repair
from sprint.inference.records import BackendTokenCounter, RunResult, critical_path_tokens


@dataclass
class BaselineConfig:
    """Settings of the baselines (each uses the fields it needs)."""

    max_tokens: int = 16000            # sequential and each self-consistency sample
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    samples: int = 8                   # self-consistency
    max_points: int = 8                # skeleton-of-thought
    skeleton_max_tokens: int = 1000
    point_max_tokens: int = 2000
    answer_max_tokens: int = 2000
    wall_clock_s: float | None = None

    def __post_init__(self):
        for f in ("max_tokens", "samples", "max_points", "skeleton_max_tokens", "point_max_tokens",
                  "answer_max_tokens"):
            if not isinstance(getattr(self, f), int) or getattr(self, f) < 1:
                raise ValueError(f"BaselineConfig.{f} must be a positive integer, got {getattr(self, f)!r}")
        if self.temperature < 0:
            raise ValueError(f"BaselineConfig.temperature must be >= 0, got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"BaselineConfig.top_p must be in (0, 1], got {self.top_p!r}")
        if self.wall_clock_s is not None and self.wall_clock_s <= 0:
            raise ValueError(f"BaselineConfig.wall_clock_s must be > 0 or None, got {self.wall_clock_s!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    def params(self, max_tokens: int, k: int = 0) -> GenerationParams:
        seed = None if self.seed is None else self.seed + k
        return GenerationParams(max_tokens=max_tokens, temperature=self.temperature, top_p=self.top_p, seed=seed)


Equivalence = Callable[[str, str], Awaitable[bool]]


class _Baseline:
    """What every baseline run shares: the call log, repairs, the budget, and the result record."""

    method = ""

    def __init__(self, question: str, backend: Backend, config: BaselineConfig, tokenizer,
                 observer: RunObserver | None):
        self.question, self.backend, self.cfg, self.tokenizer = question, backend, config, tokenizer
        self.log = CallLog(backend, observer)
        self.repairs: list[Repair] = []
        self.partial: dict[str, str] = {}   # streamed text so far, per call key, kept if the budget cuts a call

    def repair(self, kind: str, detail: str) -> None:
        self.repairs.append(Repair(None, kind, detail))
        self.log.emit(RunEvent("repair", text=f"{kind}: {detail}"))

    async def call(self, role: str, key: str | None, prompt: str, params: GenerationParams) -> str:
        slot = f"{role}:{key}"

        def keep(text: str, _: int) -> bool:
            self.partial[slot] = text
            return False

        text, rec = await self.log.call(role, None, key, prompt, params, on_text=keep)
        self.partial[slot] = text
        if rec.finish_reason == "length":
            who = f"{role} {key}" if key else role
            self.repair("cut_at_max_tokens", f"{who} reached max_tokens={params.max_tokens}")
        return text

    async def body(self) -> None:
        raise NotImplementedError

    def outcome(self) -> tuple[str, str | None, int, int, int, dict]:
        """(trajectory text, answer, stages, sequential tokens, total tokens, meta) from what the run produced."""
        raise NotImplementedError

    async def run(self, id: str | None) -> RunResult:
        start = time.perf_counter()
        try:
            if self.cfg.wall_clock_s is not None:
                await asyncio.wait_for(self.body(), timeout=self.cfg.wall_clock_s)
            else:
                await self.body()
        except asyncio.TimeoutError:
            self.repair("wall_clock_budget", f"stopped after the wall-clock budget of {self.cfg.wall_clock_s} s")
        wall = time.perf_counter() - start
        self.log.count_prompts()
        text, answer, stages, seq, total, meta = self.outcome()
        calls = self.log.records
        meta["config"] = self.cfg.to_dict()
        self.log.emit(RunEvent("done", text=text))
        return RunResult(id=id, question=self.question, method=self.method, trajectory=text, answer=answer,
                         sequential_tokens=seq, critical_path_tokens=critical_path_tokens(calls), total_tokens=total,
                         generated_tokens=sum(c.generated_tokens for c in calls), wall_clock_s=wall, stages=stages,
                         repairs=[r.to_dict() for r in self.repairs], calls=calls, meta=meta)


# ---------------------------------------------------------------------------------------------- sequential
class _Sequential(_Baseline):
    method = "sequential"

    def prompt(self) -> str:
        return layout.generation_start(layout.prompt_prefix(self.question, "sequential", self.tokenizer))

    def trace(self, generated: str) -> SequentialTrace:
        # The `<think>` opener the prompt wrote is part of the trace (parse_sequential drops it from the thinking).
        opener = self.prompt()[len(layout.prompt_prefix(self.question, "sequential", self.tokenizer)):]
        trace = parse_sequential(opener + generated)
        trace.question = self.question
        return trace

    async def body(self) -> None:
        try:
            await self.call("sequential", None, self.prompt(), self.cfg.params(self.cfg.max_tokens))
        except Exception as e:
            self.repair("call_failed", f"the generation failed: {type(e).__name__}: {e}")

    def outcome(self):
        generated = self.partial.get("sequential:None", "")
        trace = self.trace(generated)
        m = sequential_metrics(trace, BackendTokenCounter(self.backend))
        return (render_sequential(trace), extract_answer(generated), 0, m.sequential_tokens, m.total_tokens, {})


# ---------------------------------------------------------------------------------------------- self-consistency
async def majority_answer(answers: list[str | None], equivalent: Equivalence = is_equiv_async
                          ) -> tuple[int | None, list[int]]:
    """Group equivalent answers; returns (index of the first answer of the largest group, or None when no sample
    has an answer; the group number of every sample, -1 for no answer). Ties go to the group seen first."""
    reps: list[int] = []
    groups = [-1] * len(answers)
    for k, a in enumerate(answers):
        if a is None:
            continue
        for g, r in enumerate(reps):
            if await equivalent(a, answers[r]):
                groups[k] = g
                break
        else:
            groups[k] = len(reps)
            reps.append(k)
    if not reps:
        return None, groups
    sizes = [groups.count(g) for g in range(len(reps))]
    return reps[max(range(len(reps)), key=lambda g: (sizes[g], -g))], groups


class _SelfConsistency(_Sequential):
    method = "self-consistency"

    def __init__(self, *a, equivalent: Equivalence = is_equiv_async, **kw):
        super().__init__(*a, **kw)
        self.equivalent = equivalent
        self.winner: int | None = None
        self.groups: list[int] = []

    async def body(self) -> None:
        prompt = self.prompt()
        n = self.cfg.samples
        results = await asyncio.gather(*(self.call("sample", str(k + 1), prompt, self.cfg.params(self.cfg.max_tokens, k))
                                         for k in range(n)), return_exceptions=True)
        for k, res in enumerate(results):
            if isinstance(res, BaseException):
                self.repair("sample_failed", f"sample {k + 1} failed: {type(res).__name__}: {res}")
        answers = [self._answer(k) for k in range(n)]
        self.winner, self.groups = await majority_answer(answers, self.equivalent)

    def _answer(self, k: int) -> str | None:
        return extract_answer(self.partial.get(f"sample:{k + 1}", ""))

    def outcome(self):
        n = self.cfg.samples
        counter = BackendTokenCounter(self.backend)
        metrics = [sequential_metrics(self.trace(self.partial.get(f"sample:{k + 1}", "")), counter) for k in range(n)]
        shown = self.winner if self.winner is not None else 0
        trace = self.trace(self.partial.get(f"sample:{shown + 1}", ""))
        answer = self._answer(self.winner) if self.winner is not None else None
        votes = self.groups.count(self.groups[self.winner]) if self.winner is not None else 0
        meta = {"samples": [{"answer": self._answer(k), "group": g, "tokens": m.total_tokens}
                            for k, (g, m) in enumerate(zip(self.groups or [-1] * n, metrics))],
                "votes": votes, "shown_sample": shown + 1}
        # Samples run side by side: the latency is the longest sample, the cost is all of them.
        return (render_sequential(trace), answer, 0, max(m.sequential_tokens for m in metrics),
                sum(m.total_tokens for m in metrics), meta)


# ---------------------------------------------------------------------------------------------- skeleton-of-thought
SOT_SKELETON = (
    "Do not solve the problem yet. First write the outline of a solution: a numbered list of at most {n} short "
    "points, a few words each, one per line, naming the steps that lead to the answer."
)
SOT_POINT = (
    "Here is a problem and the outline of its solution. Carry out point {k} only, in a few sentences, doing any "
    "calculation it needs. Do not repeat the other points."
)
SOT_ANSWER = "Here is a problem and its worked-out steps. State the final answer, written as \\boxed{{answer}}."

_POINT_RE = re.compile(r"^\s*(\d+)\s*[.)]\s*(\S.*)$")


def skeleton_points(text: str, max_points: int) -> list[str]:
    """The points of a numbered skeleton (lines "1. ...", "2) ..."); unnumbered non-empty lines if none are."""
    points = [m.group(2).strip() for m in map(_POINT_RE.match, text.splitlines()) if m]
    if not points:
        points = [line.strip(" -*\t") for line in text.splitlines() if line.strip(" -*\t")]
    return points[:max_points]


class _SkeletonOfThought(_Baseline):
    method = "skeleton-of-thought"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.points: list[str] = []

    def _prompt(self, instruction: str, body: str, lead: str) -> str:
        """Our instruction as a user turn (through the chat template when the tokenizer has one), then `lead`."""
        user = f"{instruction}\n\nProblem:\n{self.question.strip()}" + (f"\n\n{body}" if body else "")
        if layout.has_chat_template(self.tokenizer):
            return self.tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                                      add_generation_prompt=True) + lead
        return f"{user}\n\n{lead}"

    def _outline(self) -> str:
        return "Outline:\n" + "\n".join(f"{k}. {p}" for k, p in enumerate(self.points, start=1))

    async def body(self) -> None:
        cfg = self.cfg
        try:
            skeleton = await self.call("skeleton", None, self._prompt(SOT_SKELETON.format(n=cfg.max_points), "",
                                                                      "Outline:\n1."),
                                       cfg.params(cfg.skeleton_max_tokens))
        except Exception as e:
            self.repair("call_failed", f"the skeleton call failed: {type(e).__name__}: {e}")
            return
        self.points = skeleton_points("1." + skeleton, cfg.max_points)
        if not self.points:
            self.repair("no_skeleton_points", "the skeleton had no points; the whole problem is one point")
            self.points = ["Solve the problem."]
        outline = self._outline()
        done = await asyncio.gather(*(self.call("point", str(k), self._prompt(SOT_POINT.format(k=k), outline, f"{k}."),
                                                cfg.params(cfg.point_max_tokens, k))
                                      for k in range(1, len(self.points) + 1)), return_exceptions=True)
        for k, res in enumerate(done, start=1):
            if isinstance(res, BaseException):
                self.repair("call_failed", f"point {k} failed: {type(res).__name__}: {res}")
        steps = "Steps:\n" + "\n".join(f"{k}. {self.partial.get(f'point:{k}', '').strip()}"
                                       for k in range(1, len(self.points) + 1))
        try:
            await self.call("answer", None, self._prompt(SOT_ANSWER, steps, "Final answer:"),
                            cfg.params(cfg.answer_max_tokens))
        except Exception as e:
            self.repair("call_failed", f"the answer call failed: {type(e).__name__}: {e}")

    def outcome(self):
        plan = Plan(parts=[])
        for k, point in enumerate(self.points, start=1):
            if k > 1:
                plan.parts.append("\n")
            plan.parts.append(Prompt(1, k, point))
        executions = [Execution(1, k, self.partial.get(f"point:{k}", "").strip())
                      for k in range(1, len(self.points) + 1)]
        stages = [Stage(1, plan, executions)] if self.points else []
        answer_text = self.partial.get("answer:None")
        traj = Trajectory(question=self.question, stages=stages, final_answer=answer_text.strip()
                          if answer_text is not None else None, think=False)
        text = render(traj)
        m = trajectory_metrics(traj, BackendTokenCounter(self.backend))
        return text, extract_answer(text), len(stages), m.sequential_tokens, m.total_tokens, {}


# ---------------------------------------------------------------------------------------------- entry points
async def solve_sequential(question: str, backend: Backend, config: BaselineConfig | None = None, tokenizer=None, *,
                           id: str | None = None, observer: RunObserver | None = None) -> RunResult:
    """One generation in the sequential layout."""
    return await _Sequential(question, backend, config or BaselineConfig(), tokenizer, observer).run(id)


async def solve_self_consistency(question: str, backend: Backend, config: BaselineConfig | None = None,
                                 tokenizer=None, *, id: str | None = None, observer: RunObserver | None = None,
                                 equivalent: Equivalence = is_equiv_async) -> RunResult:
    """`config.samples` sequential samples in parallel; the majority answer under `equivalent`."""
    run = _SelfConsistency(question, backend, config or BaselineConfig(temperature=0.7), tokenizer, observer,
                           equivalent=equivalent)
    return await run.run(id)


async def solve_skeleton_of_thought(question: str, backend: Backend, config: BaselineConfig | None = None,
                                    tokenizer=None, *, id: str | None = None,
                                    observer: RunObserver | None = None) -> RunResult:
    """Skeleton, points expanded in parallel, then an answer call."""
    return await _SkeletonOfThought(question, backend, config or BaselineConfig(), tokenizer, observer).run(id)
