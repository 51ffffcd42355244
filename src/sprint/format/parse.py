"""Lenient parsing of SPRINT trajectory text into `Trajectory` records, with diagnostics.

Model output is messy: tags go unclosed, numbers skip, planners write execution tags. `parse()` never drops text
silently: whatever it cannot place is reported as a `Diagnostic` with its character position. Misplaced tags and
unclosed spans inside a block stay in that block as text, so `render()` keeps them; text outside every block is
reported as `stray_text` and is not part of the parsed trajectory (`render()` does not write it). `strict=True`
turns the first diagnostic into a `TrajectoryParseError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sprint.format import tags as T
from sprint.format.trajectory import Diagnostic, Execution, Plan, PlanPart, Prompt, Stage, Trajectory


class TrajectoryParseError(ValueError):
    """Raised by `parse(strict=True)`: names the problem and its character position."""

    def __init__(self, diagnostic: Diagnostic):
        super().__init__(str(diagnostic))
        self.diagnostic = diagnostic
        self.code = diagnostic.code
        self.pos = diagnostic.pos


@dataclass(frozen=True)
class _Tag:
    kind: str
    closing: bool
    stage: int | None
    index: int | None
    start: int
    end: int

    @property
    def name(self) -> str:
        if self.index is not None:
            return f"{self.kind}_{self.stage}.{self.index}"
        if self.stage is not None:
            return f"{self.kind}_{self.stage}"
        return self.kind

    @property
    def text(self) -> str:
        return T.close_tag(self.name) if self.closing else T.open_tag(self.name)


def _scan(text: str) -> list[_Tag]:
    out = []
    for m in T.TAG_RE.finditer(text):
        stage = int(m.group("stage")) if m.group("stage") is not None else None
        index = int(m.group("index")) if m.group("index") is not None else None
        out.append(_Tag(m.group("kind"), m.group("slash") == "/", stage, index, m.start(), m.end()))
    return out


_TOP_OPENERS = {T.QUESTION, T.PLAN, T.EXECUTION_BLOCK, T.FINAL_ANSWER}


def _starts_body(tag: _Tag) -> bool:
    """Whether free text before `tag` (right after <think>) is a preamble: the tag opens a plan or the final
    answer, or closes <think>."""
    if tag.kind == T.THINK:
        return tag.closing
    return not tag.closing and tag.kind in (T.PLAN, T.FINAL_ANSWER)
_EXCERPT = 60


def _excerpt(s: str) -> str:
    s = " ".join(s.split())
    return s if len(s) <= _EXCERPT else s[: _EXCERPT - 3] + "..."


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tags = _scan(text)
        self.diags: list[Diagnostic] = []

    def diag(self, code: str, message: str, pos: int) -> None:
        self.diags.append(Diagnostic(code, message, pos))

    # -- helpers ----------------------------------------------------------------------------------
    def _block_end(self, k: int, kind: str, stops: set[str]) -> tuple[int, int, int]:
        """Find the end of the block opened by tags[k].

        Returns (content_end, resume_pos, next_tag_index). A block ends at the first closing tag of its kind; if a
        tag of a kind in `stops` (opening) or a closing `think` comes first, the block is unclosed and ends there.
        """
        open_tag = self.tags[k]
        for m in range(k + 1, len(self.tags)):
            t = self.tags[m]
            if t.closing and t.kind == kind:
                if t.stage != open_tag.stage or t.index != open_tag.index:
                    self.diag("misnumbered_close", f"{open_tag.text} is closed by {t.text}", t.start)
                return t.start, t.end, m + 1
            if (not t.closing and t.kind in stops) or (t.closing and t.kind == T.THINK):
                self.diag("unclosed_tag", f"{open_tag.text} is not closed before {t.text}", open_tag.start)
                return t.start, t.start, m
        self.diag("unclosed_tag", f"{open_tag.text} is not closed before the end of the text", open_tag.start)
        return len(self.text), len(self.text), len(self.tags)

    def _stray_text(self, start: int, end: int, where: str) -> None:
        chunk = self.text[start:end]
        if chunk.strip():
            lead = len(chunk) - len(chunk.lstrip())
            self.diag("stray_text", f"text {where} is outside every block: {_excerpt(chunk)!r}", start + lead)

    # -- blocks -----------------------------------------------------------------------------------
    def plan_body(self, start: int, end: int, stage: int) -> Plan:
        parts: list[PlanPart] = []
        inner = [t for t in self.tags if start <= t.start and t.end <= end]
        cursor = start
        expected = 1
        i = 0
        while i < len(inner):
            t = inner[i]
            if t.kind == T.PROMPT and not t.closing:
                # The prompt ends at its closing tag, unless another prompt opens first.
                close = None
                for u in inner[i + 1:]:
                    if u.kind == T.PROMPT:
                        close = u if u.closing else None
                        break
                if close is None:
                    nxt = next((u.start for u in inner[i + 1:] if u.kind == T.PROMPT), end)
                    para = self.text.find("\n\n", t.end, nxt)
                    p_end = para if para != -1 else nxt
                    self.diag("unclosed_tag", f"{t.text} is not closed", t.start)
                    resume = p_end
                else:
                    if close.stage != t.stage or close.index != t.index:
                        self.diag("misnumbered_close", f"{t.text} is closed by {close.text}", close.start)
                    p_end, resume = close.start, close.end
                if t.stage != stage or t.index != expected:
                    self.diag("misnumbered_prompt",
                              f"{t.text} in Plan_{stage} should be <{T.prompt_name(stage, expected)}>", t.start)
                if self.text[cursor:t.start]:
                    parts.append(self.text[cursor:t.start])
                parts.append(Prompt(t.stage if t.stage is not None else stage,
                                    t.index if t.index is not None else expected,
                                    self.text[t.end:p_end].strip()))
                expected += 1
                cursor = resume
                while i < len(inner) and inner[i].start < resume:
                    i += 1
                continue
            self.diag("stray_tag", f"{t.text} inside Plan_{stage} is kept as plan text", t.start)
            i += 1
        if self.text[cursor:end]:
            parts.append(self.text[cursor:end])
        # Canonical plans carry no leading or trailing whitespace.
        if parts and isinstance(parts[0], str):
            parts[0] = parts[0].lstrip()
        if parts and isinstance(parts[-1], str):
            parts[-1] = parts[-1].rstrip()
        return Plan([p for p in parts if not (isinstance(p, str) and p == "")])

    def execution_body(self, start: int, end: int, stage: int) -> list[Execution]:
        execs: list[Execution] = []
        inner = [t for t in self.tags if start <= t.start and t.end <= end]
        cursor = start
        i = 0
        while i < len(inner):
            t = inner[i]
            if t.kind == T.EXECUTION and not t.closing:
                close = None
                for u in inner[i + 1:]:
                    if u.kind == T.EXECUTION:
                        close = u if u.closing else None
                        break
                if close is None:
                    nxt = next((u.start for u in inner[i + 1:] if u.kind == T.EXECUTION), end)
                    self.diag("unclosed_tag", f"{t.text} is not closed", t.start)
                    e_end = resume = nxt
                else:
                    if close.stage != t.stage or close.index != t.index:
                        self.diag("misnumbered_close", f"{t.text} is closed by {close.text}", close.start)
                    e_end, resume = close.start, close.end
                gap = self.text[cursor:t.start]
                if gap.strip():
                    self._stray_text(cursor, t.start, f"in Execution_{stage}")
                execs.append(Execution(t.stage if t.stage is not None else stage,
                                       t.index if t.index is not None else len(execs) + 1,
                                       self.text[t.end:e_end].strip()))
                cursor = resume
                while i < len(inner) and inner[i].start < resume:
                    i += 1
                continue
            self.diag("stray_tag", f"{t.text} inside Execution_{stage} is ignored", t.start)
            i += 1
        tail = self.text[cursor:end]
        if tail.strip() and not (tail.strip() == T.NO_PROMPT_TEXT and not execs):
            self._stray_text(cursor, end, f"in Execution_{stage}")
        return execs

    # -- top level --------------------------------------------------------------------------------
    def run(self) -> Trajectory:
        traj = Trajectory(think=False)
        text = self.text
        cursor = 0
        k = 0
        in_think = False
        while k < len(self.tags):
            t = self.tags[k]
            gap_start = cursor
            if t.kind == T.THINK:
                if t.closing:
                    self._stray_text(gap_start, t.start, "before </think>")
                    if not in_think:
                        self.diag("stray_tag", "</think> without <think>", t.start)
                    in_think = False
                else:
                    self._stray_text(gap_start, t.start, "before <think>")
                    traj.think = in_think = True
                    # Free text right after <think> and before the first plan (or the final answer, or </think>
                    # when there is no block at all) is the preamble.
                    nxt = self.tags[k + 1].start if k + 1 < len(self.tags) else len(text)
                    if text[t.end:nxt].strip() and (k + 1 >= len(self.tags) or _starts_body(self.tags[k + 1])):
                        traj.preamble = text[t.end:nxt].strip()
                        cursor = nxt
                        k += 1
                        continue
                cursor = t.end
                k += 1
                continue
            if t.closing or t.kind not in _TOP_OPENERS:
                self.diag("stray_tag", f"{t.text} outside the block it belongs to", t.start)
                cursor = t.end
                k += 1
                continue
            if (t.kind in (T.PLAN, T.FINAL_ANSWER) and not traj.think and not traj.stages and not traj.preamble
                    and traj.final_answer is None and text[gap_start:t.start].strip()):
                # Without <think>, render() writes the preamble between the question and the first block.
                traj.preamble = text[gap_start:t.start].strip()
            else:
                self._stray_text(gap_start, t.start, f"before {t.text}")
            if t.kind == T.QUESTION:
                c_end, cursor, k = self._block_end(k, T.QUESTION, {T.PLAN, T.EXECUTION_BLOCK, T.FINAL_ANSWER, T.THINK})
                if traj.question is not None:
                    self.diag("duplicate_block", "a second <Question> block", t.start)
                traj.question = text[t.end:c_end].strip()
            elif t.kind == T.PLAN:
                c_end, cursor, k2 = self._block_end(k, T.PLAN, {T.PLAN, T.EXECUTION_BLOCK, T.FINAL_ANSWER})
                plan = self.plan_body(t.end, c_end, t.stage or 0)
                traj.stages.append(Stage(index=t.stage or 0, plan=plan, execution_block=False))
                k = k2
            elif t.kind == T.EXECUTION_BLOCK:
                c_end, cursor, k2 = self._block_end(k, T.EXECUTION_BLOCK, {T.PLAN, T.EXECUTION_BLOCK, T.FINAL_ANSWER})
                execs = self.execution_body(t.end, c_end, t.stage or 0)
                last = traj.stages[-1] if traj.stages else None
                if last is None or last.index != t.stage or last.execution_block:
                    self.diag("execution_without_plan", f"{t.text} does not follow <Plan_{t.stage}>", t.start)
                    last = Stage(index=t.stage or 0, plan=Plan())
                    traj.stages.append(last)
                last.execution_block = True
                last.executions = execs
                k = k2
            else:  # Final answer
                c_end, cursor, k2 = self._block_end(k, T.FINAL_ANSWER, {T.PLAN, T.EXECUTION_BLOCK, T.FINAL_ANSWER})
                if traj.final_answer is not None:
                    self.diag("duplicate_block", "a second <Final_answer> block", t.start)
                    traj.final_answer += "\n\n" + text[t.end:c_end].strip()
                else:
                    traj.final_answer = text[t.end:c_end].strip()
                k = k2
        self._stray_text(cursor, len(text), "at the end")
        if in_think and traj.final_answer is not None:
            self.diag("unclosed_tag", "<think> is not closed", text.find(T.open_tag(T.THINK)))
        self.check(traj)
        traj.diagnostics = sorted(self.diags, key=lambda d: d.pos)
        return traj

    def check(self, traj: Trajectory) -> None:
        """Numbering and consistency checks across blocks."""
        for n, stage in enumerate(traj.stages, start=1):
            pos = self._pos_of(T.open_tag(T.plan_name(stage.index)))
            if stage.index != n:
                code = "stage_gap" if stage.index > n else "misnumbered_stage"
                self.diag(code, f"stage {n} is numbered {stage.index}", pos)
            prompts = stage.prompts
            if stage.execution_block and len(stage.executions) != len(prompts):
                self.diag("count_mismatch", f"Plan_{stage.index} has {len(prompts)} prompt(s) but "
                          f"Execution_{stage.index} has {len(stage.executions)} execution(s)",
                          self._pos_of(T.open_tag(T.execution_block_name(stage.index))))
            for j, e in enumerate(stage.executions, start=1):
                if (e.stage, e.index) != (stage.index, j):
                    self.diag("misnumbered_execution", f"execution {j} of Execution_{stage.index} is "
                              f"numbered {e.id}", self._pos_of(T.open_tag(T.execution_name(e.stage, e.index))))
        if traj.stages and traj.final_answer is None:
            self.diag("missing_final_answer", "no <Final_answer> block", len(self.text))

    def _pos_of(self, needle: str) -> int:
        p = self.text.find(needle)
        return p if p >= 0 else 0


def parse(text: str, *, strict: bool = False) -> Trajectory:
    """Parse SPRINT trajectory text. Lenient by default; `strict=True` raises on the first problem."""
    if not isinstance(text, str):
        raise TypeError(f"parse() expects str, got {type(text).__name__}")
    traj = _Parser(text).run()
    if strict and traj.diagnostics:
        raise TrajectoryParseError(traj.diagnostics[0])
    return traj


def parse_plan(text: str, stage: int) -> tuple[Plan, list[Diagnostic]]:
    """Parse the body of one plan (what a planner generated after `<Plan_{stage}>`)."""
    p = _Parser(text)
    plan = p.plan_body(0, len(text), stage)
    return plan, p.diags

