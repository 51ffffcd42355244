"""The SPRINT orchestrator: one planner stream, executors dispatched eagerly as prompts close, results appended in
prompt order, and every repair recorded.

How a question runs
-------------------
`start` = `layout.generation_start(layout.prompt_prefix(question, "sprint", tokenizer))`: exactly the bytes the
model saw before its first generated token in training. Stage i (1 <= i < max_stages):

* **Planner.** Input = `start` + the finished stages rendered by the format module (`stage_context`), so the text
  is byte-identical to the prefix of the rendered trajectory. At stage 1 the plan opening `<Plan_1>\\n` is appended
  (every training trajectory starts with a plan). From stage 2 on the input ends at the stage boundary and the
  model writes the opening itself: in training, what follows `</Execution_{i-1}>\\n\\n` is either `<Plan_i>` or
  `<Final_answer>`, and that choice is how the model says it is done; writing `<Plan_i>` for it would take the
  choice away and force extra stages. It generates until `tags.planner_stop_strings(i)`.
* **Eager dispatch.** The planner is streamed; the moment `</prompt_i.j>` arrives, executor i.j starts as an
  asyncio task while the planner keeps writing (`eager=False` waits for the whole plan). The executor contexts do
  not depend on when an executor starts, so eager and non-eager runs send the same bytes.
* **Executor context.** Executor i.j continues
  `stage_context + <Plan_i>\\n + plan body up to and including </prompt_i.j> + \\n</Plan_i>\\n\\n<Execution_i>\\n
  <execution_i.j>\\n` (`format.incremental.executor_context`). Why this construction:
  - Under eager dispatch the plan after `</prompt_i.j>` does not exist yet when i.j starts, and executors of one
    stage run side by side, so no executor can see the plan's later text or its siblings' executions. Cutting
    the plan right after the executor's own prompt is the only context that is the same whether dispatch is
    eager or not (reproducible, identical greedy outputs in both modes).
  - It keeps the shared prefix longest: every executor's context is the planner's own text up to its prompt plus
    a ~15-token suffix, so a prefix cache (vLLM/SGLang, or the in-process backend's KV reuse) serves the whole
    plan-so-far from the planner's stream; only the suffix and the execution are new.
  - It matches the training layout at the point where the executor generates: in training an execution body
    always follows `</Plan_i>\\n\\n<Execution_i>\\n<execution_i.j>\\n`, so we close the (cut) plan and open the
    block the same way rather than opening an execution tag inside a plan, which the model never saw. The one
    remaining difference from training (later plan text and executions i.1..i.(j-1) are absent) is inherent to
    running executions in parallel: the paper's premise is that they do not depend on each other.
  - The plan text in the context is the canonical rendering of the parsed (and, if needed, renumbered) plan, so
    executors see training-format bytes even when the planner was sloppy with whitespace or numbering.
* **Results** are appended in prompt order whatever order executors finish in; a plan without prompts gets the
  format's "no prompt" execution block and the run goes on to the next stage.
* **Final answer.** When the planner writes `<Final_answer>` the run ends. The last stage (`max_stages`), an empty
  planner turn, or a planner that keeps failing lead to a forced final answer: the final-answer opening is
  appended and the model generates the answer.

Token-boundary note: prompts end right after a tag's `>` plus one newline (`<Plan_1>\\n`, `<execution_i.j>\\n`) or
after a block separator; those ends are token boundaries for Qwen/Llama-3-style pre-tokenizers, so the model sees
the same token ids as in training there.

Repairs (all recorded in `RunResult.repairs` as {stage, kind, detail}): misnumbered/missing/extra tags (prompts
renumbered with the format's builders), a planner that writes executions or the next stage (text dropped, stream
closed early), an executor that writes tags (cut there), generations cut at max tokens, executor failures after
retries (an error note becomes that execution's text and the stage goes on), a forced final answer, and the
wall-clock budget (the run stops; finished executions are kept, the answer is whatever the text holds).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field, fields

from sprint.backends.base import Backend, GenerationParams
from sprint.eval.grading import extract_answer
from sprint.format import layout, render, trajectory_metrics
from sprint.format import incremental as F
from sprint.format import tags as T
from sprint.format.trajectory import Execution, Plan, Prompt, Stage, Trajectory, render_execution
from sprint.inference.calls import CallLog, RunEvent, RunObserver
from sprint.inference.interpret import Repair, clean_execution, excerpt, interpret_planner_turn
from sprint.inference.records import BackendTokenCounter, RunResult, critical_path_tokens

#: Whether executor calls ask the backend to keep their KV (`GenerationParams.keep_kv`). No later prompt extends an
#: executor's prompt and output: the next planner prompt holds the execution at other positions, and the shared
#: context is the planner's own. Keeping it only cost the in-process backend a KV copy per executor (1.6 ms of
#: host work each in a trace on an H200 host, the stage's last executor's before the next planner's admission).
EXECUTOR_KEEP_KV = False


@dataclass
class SprintConfig:
    """Settings of a SPRINT run. `max_stages` counts the final answer: stage `max_stages` is a forced answer."""

    max_stages: int = 12
    max_plan_tokens: int = 8000
    max_exec_tokens: int = 8000
    max_answer_tokens: int = 2048      # a forced final answer
    wall_clock_s: float | None = None  # budget per question; None = no limit
    planner_temperature: float = 0.0
    planner_top_p: float = 1.0
    executor_temperature: float = 0.0
    executor_top_p: float = 1.0
    seed: int | None = None            # base seed; each call derives its own (see `call_seed`)
    eager: bool = True
    executor_retries: int = 2          # extra attempts after a failed executor call
    planner_retries: int = 2
    retry_backoff_s: float = 0.5       # doubled after each failed attempt

    def __post_init__(self):
        for f in ("max_stages", "max_plan_tokens", "max_exec_tokens", "max_answer_tokens"):
            if not isinstance(getattr(self, f), int) or getattr(self, f) < 1:
                raise ValueError(f"SprintConfig.{f} must be a positive integer, got {getattr(self, f)!r}")
        for f in ("executor_retries", "planner_retries"):
            if getattr(self, f) < 0:
                raise ValueError(f"SprintConfig.{f} must be >= 0, got {getattr(self, f)!r}")
        for f in ("planner_temperature", "executor_temperature", "retry_backoff_s"):
            if getattr(self, f) < 0:
                raise ValueError(f"SprintConfig.{f} must be >= 0, got {getattr(self, f)!r}")
        for f in ("planner_top_p", "executor_top_p"):
            if not 0 < getattr(self, f) <= 1:
                raise ValueError(f"SprintConfig.{f} must be in (0, 1], got {getattr(self, f)!r}")
        if self.wall_clock_s is not None and self.wall_clock_s <= 0:
            raise ValueError(f"SprintConfig.wall_clock_s must be > 0 or None, got {self.wall_clock_s!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def call_seed(base: int | None, stage: int, index: int, attempt: int) -> int | None:
    """A distinct, reproducible seed per call (planner index 0), so sampled executors of one stage differ."""
    if base is None:
        return None
    return base + 1_000 * stage + index + 1_000_000 * (attempt - 1)


def retryable(error: BaseException) -> bool:
    """Whether another attempt could succeed: not for bad input (ValueError/TypeError, e.g. a prompt longer than
    the model's context) nor for errors the backend marks as final (`retryable = False`, e.g. HTTP 400)."""
    return not isinstance(error, (ValueError, TypeError)) and getattr(error, "retryable", True) is not False


def failure_note(stage: int, index: int, attempts: int, error: BaseException | str) -> str:
    """The execution text that stands in for an executor that never produced output (no tags, one line)."""
    why = T.strip_format_tags(str(error) if isinstance(error, str) else f"{type(error).__name__}: {error}")
    return f"[Execution {stage}.{index} did not run: {' '.join(why.split())[:200]} ({attempts} attempt(s))]"


@dataclass
class _StageState:
    """The stage in progress: what was dispatched and finished, so a cancelled run can keep its partial work."""

    index: int
    context: str
    tasks: dict[int, asyncio.Task] = field(default_factory=dict)
    prompts: dict[int, Prompt] = field(default_factory=dict)
    results: dict[int, str] = field(default_factory=dict)
    plan: Plan | None = None
    planner_text: str = ""
    planner_tokens_before: int = 0   # tokens of earlier (failed) planner attempts of this stage

    async def cancel(self) -> None:
        """Cancel the executors still running (finished results stay in `results`)."""
        pending = [t for t in self.tasks.values() if not t.done()]
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def restart(self) -> None:
        """Forget everything dispatched (the planner is about to write this stage again)."""
        await self.cancel()
        self.tasks.clear()
        self.prompts.clear()
        self.results.clear()


class _SprintRun:
    def __init__(self, question: str, backend: Backend, config: SprintConfig, tokenizer, observer: RunObserver | None):
        self.question = question
        self.backend = backend
        self.cfg = config
        self.log = CallLog(backend, observer)
        self.start = layout.generation_start(layout.prompt_prefix(question, "sprint", tokenizer))
        self.traj = Trajectory(question=question, think=True)
        self.repairs: list[Repair] = []
        self.current: _StageState | None = None
        self.forced = False
        # Executors dispatched while their planner still wrote: (stage, prompt index) -> (planner tokens of earlier
        # attempts, the planner's text up to the prompt). Counted after the run (`count_dispatch_tokens`): a count is
        # a tokenization, a fraction of a millisecond that would otherwise hold up the running streams.
        self._uncounted: dict[tuple[int, int], tuple[int, str]] = {}

    def repair(self, stage: int | None, kind: str, detail: str) -> None:
        self.add_repairs([Repair(stage, kind, detail)])

    def add_repairs(self, repairs: list[Repair]) -> None:
        for r in repairs:
            self.repairs.append(r)
            self.log.emit(RunEvent("repair", stage=r.stage, text=f"{r.kind}: {r.detail}"))

    # -- the stage loop ---------------------------------------------------------------------------
    async def run(self) -> None:
        for i in range(1, self.cfg.max_stages):
            outcome = await self.stage(i)
            if outcome == "answered":
                return
            if outcome == "give_up":
                break
        else:
            self.repair(None, "max_stages", f"no final answer after {self.cfg.max_stages - 1} stage(s); forcing one")
        await self.force_final_answer()

    async def stage(self, i: int) -> str:
        """Run stage i. Returns "answered", "continue" or "give_up" (go straight to a forced answer)."""
        st = self.current = _StageState(i, F.stage_context(self.start, self.traj.stages))
        try:
            return await self._stage(st)
        except asyncio.CancelledError:
            # The budget ran out (or the caller gave up): stop the executors, keep what they finished.
            await st.cancel()
            raise

    async def _stage(self, st: _StageState) -> str:
        cfg, i, context = self.cfg, st.index, st.context
        given = F.plan_opening(i) if i == 1 else ""
        text = None
        for attempt in range(1, cfg.planner_retries + 2):
            params = GenerationParams(max_tokens=cfg.max_plan_tokens, temperature=cfg.planner_temperature,
                                      top_p=cfg.planner_top_p, stop=T.planner_stop_strings(i),
                                      seed=call_seed(cfg.seed, i, 0, attempt))
            try:
                text, rec = await self.log.call("planner", i, None, context + given, params, attempt=attempt,
                                                on_text=self._planner_hook(st, given))
                break
            except Exception as e:
                failed = next(r for r in reversed(self.log.records) if r.role == "planner" and r.stage == i)
                await st.restart()
                st.planner_tokens_before += failed.generated_tokens
                if attempt > cfg.planner_retries or not retryable(e):
                    self.repair(i, "planner_failed", f"planner call failed {attempt} time(s); last error: "
                                f"{type(e).__name__}: {e}")
                    self.current = None
                    return "give_up"
                await asyncio.sleep(cfg.retry_backoff_s * 2 ** (attempt - 1))
        assert text is not None
        st.planner_text = text
        turn = interpret_planner_turn(given + text, i)
        self.add_repairs(turn.repairs)
        if rec.finish_reason == "length":
            self.repair(i, "cut_at_max_tokens", f"the planner reached max_plan_tokens={cfg.max_plan_tokens}")
        if turn.plan is None:  # a final answer and nothing else
            self.traj.final_answer = turn.final_answer or ""
            self.current = None
            return "answered"
        plan = st.plan = turn.plan
        if not text.strip():
            self.repair(i, "empty_plan", "the planner wrote no text (nothing or only whitespace); forcing a final answer")
            self.current = None
            return "give_up"
        planner_tokens = st.planner_tokens_before + rec.generated_tokens
        for p in plan.prompts:
            sent = st.prompts.get(p.index)
            if sent is None:
                self._dispatch(st, p, plan, planner_tokens)
            elif sent.text != p.text:
                # Only possible when the lenient parse of the partial plan read a prompt differently; the record
                # must show what the executor actually received.
                self.repair(i, "prompt_changed_after_dispatch", f"prompt {p.id} was dispatched as "
                            f"{excerpt(sent.text)!r}, the finished plan reads {excerpt(p.text)!r}")
                p.text = sent.text
        for extra in sorted(set(st.prompts) - {p.index for p in plan.prompts}):
            self.repair(i, "dispatched_prompt_dropped", f"prompt {i}.{extra} was dispatched but is not in the "
                        "finished plan; its execution is discarded")
            st.tasks[extra].cancel()
        order = [p.index for p in plan.prompts]
        outputs = await asyncio.gather(*(st.tasks[j] for j in order))
        executions = [Execution(i, j, out) for j, out in zip(order, outputs)]
        self.traj.stages.append(Stage(index=i, plan=plan, executions=executions, execution_block=True))
        self.current = None
        self.log.emit(RunEvent("stage_end", stage=i))
        if turn.final_answer is not None:
            if not plan.prompts:
                self.traj.final_answer = turn.final_answer
                return "answered"
            self.repair(i, "final_answer_before_executions", "the planner wrote a final answer before its prompts "
                        f"were executed; the answer is dropped and the run goes on: {excerpt(turn.final_answer)!r}")
        return "continue"

    def _planner_hook(self, st: _StageState, given: str):
        """Watches the planner stream: dispatches executors as prompts close (eager) and ends the stream early when
        the planner goes past its plan (misnumbered closing tag, execution tags, ...)."""

        def on_text(text: str, new_from: int) -> bool:
            # Only the tail can hold a new tag; the whole turn is read again only when one arrives (per delta this
            # is a short regex scan, so the orchestrator's cost stays linear in the text).
            new = [t for t in F.find_tags(text, max(0, new_from - F.MAX_TAG_CHARS)) if t.end > new_from]
            if not new:
                return False
            closes = [t for t in new if F.is_close(t, T.PROMPT)]
            if closes and self.cfg.eager:
                cut = closes[-1].end
                turn = interpret_planner_turn(given + text[:cut], st.index)
                if turn.plan is not None:
                    for p in turn.plan.prompts:
                        if p.index not in st.prompts:
                            self._uncounted[(st.index, p.index)] = (st.planner_tokens_before, text[:cut])
                            self._dispatch(st, p, turn.plan, None)
            if any(t.kind != T.PROMPT for t in new):
                return interpret_planner_turn(given + text, st.index).ended
            return False

        return on_text

    def count_dispatch_tokens(self) -> None:
        """Fill in `dispatch_tokens` of the executor calls dispatched mid-plan (see `_uncounted`)."""
        counts: dict[tuple[int, int], int] = {}
        for rec in self.log.records:
            if rec.role != "executor" or rec.dispatch_tokens is not None or rec.prompt_id is None:
                continue
            key = (rec.stage, int(rec.prompt_id.rsplit(".", 1)[1]))
            if key in self._uncounted and key not in counts:
                before, text = self._uncounted[key]
                counts[key] = before + self.backend.count_tokens(text)
            if key in counts:
                rec.dispatch_tokens = counts[key]

    def _hand_over(self, st: _StageState, j: int) -> None:
        """Hand the backend execution `j` as it finishes, unless it is the stage's last, when it can use that ahead
        (`prepare_prompt`: the in-process backend tokenizes it): the next planner prompt holds it, and is then
        tokenized from cached pieces, leaving only the last execution to tokenize on the stage's critical path
        (the whole prompt, 1,000+ tokens of executions, took 2-4 ms there on the lent GPU machines)."""
        prepare = getattr(self.backend, "prepare_prompt", None)
        if prepare is None or j not in st.results:
            return
        if st.plan is not None and all(p.index in st.results for p in st.plan.prompts):
            return   # the stage's last: its prompt follows at once
        prepare(render_execution(Execution(st.index, j, st.results[j])))

    def _dispatch(self, st: _StageState, prompt: Prompt, plan: Plan, planner_tokens: int | None) -> None:
        j = prompt.index
        st.prompts[j] = Prompt(prompt.stage, prompt.index, prompt.text)
        ctx = F.executor_context(st.context, st.index, plan, j)
        st.tasks[j] = asyncio.create_task(self.execute(st, j, ctx, planner_tokens), name=f"executor {st.index}.{j}")

    async def execute(self, st: _StageState, j: int, context: str, dispatch_tokens: int | None) -> str:
        """Run executor st.index.j with retries; never raises (a failure becomes an error note)."""
        cfg, i = self.cfg, st.index
        last_error: BaseException | None = None
        attempts = cfg.executor_retries + 1
        for attempt in range(1, attempts + 1):
            params = GenerationParams(max_tokens=cfg.max_exec_tokens, temperature=cfg.executor_temperature,
                                      top_p=cfg.executor_top_p, stop=T.executor_stop_strings(i, j),
                                      seed=call_seed(cfg.seed, i, j, attempt), keep_kv=EXECUTOR_KEEP_KV)

            def on_text(text: str, new_from: int) -> bool:
                return bool(F.find_tags(text, max(0, new_from - F.MAX_TAG_CHARS)))

            try:
                text, rec = await self.log.call("executor", i, f"{i}.{j}", context, params, on_text=on_text,
                                                attempt=attempt, dispatch_tokens=dispatch_tokens)
            except Exception as e:
                last_error = e
                if not retryable(e):
                    attempts = attempt
                    break
                if attempt < attempts:
                    await asyncio.sleep(cfg.retry_backoff_s * 2 ** (attempt - 1))
                continue
            out, repairs, _ = clean_execution(text, i, j)
            self.add_repairs(repairs)
            if rec.finish_reason == "length":
                self.repair(i, "cut_at_max_tokens", f"executor {i}.{j} reached max_exec_tokens={cfg.max_exec_tokens}")
            st.results[j] = out
            self._hand_over(st, j)
            return out
        self.repair(i, "executor_failed", f"executor {i}.{j} failed {attempts} time(s); last error: "
                    f"{type(last_error).__name__}: {last_error}")
        note = failure_note(i, j, attempts, last_error)
        st.results[j] = note
        self._hand_over(st, j)
        return note

    async def force_final_answer(self) -> None:
        cfg = self.cfg
        self.forced = True
        context = F.stage_context(self.start, self.traj.stages) + F.final_answer_opening()
        params = GenerationParams(max_tokens=cfg.max_answer_tokens, temperature=cfg.planner_temperature,
                                  top_p=cfg.planner_top_p, stop=[T.close_tag(T.FINAL_ANSWER)],
                                  seed=call_seed(cfg.seed, len(self.traj.stages) + 1, 0, 1))
        try:
            text, rec = await self.log.call("final_answer", None, None, context, params,
                                            on_text=lambda t, n: bool(F.find_tags(t, max(0, n - F.MAX_TAG_CHARS))))
        except Exception as e:
            self.repair(None, "final_answer_failed", f"the forced final answer failed: {type(e).__name__}: {e}")
            return
        tags = F.find_tags(text)
        if tags:
            self.repair(None, "text_after_final_answer", f"text from {tags[0].text} dropped: "
                        f"{excerpt(text[tags[0].start:])!r}")
            text = text[: tags[0].start]
        if rec.finish_reason == "length":
            self.repair(None, "cut_at_max_tokens", f"the forced final answer reached max_answer_tokens="
                        f"{cfg.max_answer_tokens}")
        self.repair(None, "forced_final_answer", "the final answer was forced")
        self.traj.final_answer = text.strip()

    def keep_partial_stage(self) -> None:
        """After the budget ran out: keep the stage in progress if its plan was finished."""
        st = self.current
        if st is None:
            return
        if st.plan is None:
            if st.planner_text.strip():
                self.repair(st.index, "unfinished_plan_dropped", f"plan {st.index} was not finished: "
                            f"{excerpt(st.planner_text)!r}")
            return
        executions = [Execution(st.index, p.index, st.results.get(p.index) or
                                failure_note(st.index, p.index, 1, "wall-clock budget exhausted"))
                      for p in st.plan.prompts]
        self.traj.stages.append(Stage(index=st.index, plan=st.plan, executions=executions, execution_block=True))


async def solve(question: str, backend: Backend, config: SprintConfig | None = None, tokenizer=None, *,
                id: str | None = None, observer: RunObserver | None = None) -> RunResult:
    """Answer one question with SPRINT on `backend`. Never raises on model output; see the module docstring.

    `tokenizer` (a Hugging Face tokenizer) decides the layout: with a chat template the prompt is the template
    applied to [system, user], as in training; without one it is the plain `<Question>` block.
    """
    config = config or SprintConfig()
    run = _SprintRun(question, backend, config, tokenizer, observer)
    wall_start = time.perf_counter()
    try:
        if config.wall_clock_s is not None:
            await asyncio.wait_for(run.run(), timeout=config.wall_clock_s)
        else:
            await run.run()
    except asyncio.TimeoutError:
        run.keep_partial_stage()
        run.repair(None, "wall_clock_budget", f"stopped after the wall-clock budget of {config.wall_clock_s} s")
    wall = time.perf_counter() - wall_start
    run.count_dispatch_tokens()
    run.log.count_prompts()
    traj = run.traj
    text = render(traj)
    metrics = trajectory_metrics(traj, BackendTokenCounter(backend))
    calls = run.log.records
    result = RunResult(
        id=id, question=question, method="sprint", trajectory=text, answer=extract_answer(text),
        sequential_tokens=metrics.sequential_tokens, critical_path_tokens=critical_path_tokens(calls),
        total_tokens=metrics.total_tokens, generated_tokens=sum(c.generated_tokens for c in calls),
        wall_clock_s=wall, stages=len(traj.stages), repairs=[r.to_dict() for r in run.repairs], calls=calls,
        meta={"forced_final_answer": run.forced, "config": config.to_dict()})
    run.log.emit(RunEvent("done", text=text))
    return result
