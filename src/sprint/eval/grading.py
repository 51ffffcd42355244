"""Answer grading: extract the final answer of a model output and check it against the gold answer with math-verify.

* `extract_answer`: the `\\boxed{}` inside the final-answer block when there is one, else the last `\\boxed{}` /
  `\\fbox{}` of the text (nested braces and `\\boxed 5` handled).
* `is_equiv`: math-verify's `parse` + `verify` under a time limit. There is deliberately no "strip punctuation and
  compare strings" fallback: it makes "-5" equal "5" and "1/2" equal "12".
* Accuracy is over ALL items: an item without an answer counts as wrong and is reported as "no answer".

Time limits: math-verify guards itself with `signal.alarm`, which only works in the main thread. In the main thread
we use it directly; in any other thread (thread pools, `asyncio.to_thread`, web servers) the check runs in a small
pool of worker processes, where it again runs in a main thread, and a worker that does not answer in time is killed.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import math
import re
import select
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Iterable, Literal

from sprint.format import tags as T

Status = Literal["correct", "wrong", "no_answer"]

# ---------------------------------------------------------------------------------------------- extraction
# `\boxed` or `\fbox` as whole commands (not `\fboxsep`, `\boxedsomething`).
_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# `\boxed 5`: the argument is the next run of characters up to whitespace or the end of math mode.
_BARE_ARG_RE = re.compile(r"[^\s$]+")


def braced_group(text: str, start: int) -> tuple[str, int] | None:
    """The content of the brace group opening at text[start] (nested, `\\{` `\\}` skipped), and the index after it."""
    depth = 0
    i = start
    while i < len(text):
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1:i], i + 1
        i += 1
    return None  # unbalanced: the text was cut off inside the box


def boxed_contents(text: str) -> list[str]:
    """The arguments of every `\\boxed`/`\\fbox` in `text`, in order (empty and unbalanced boxes are skipped)."""
    out = []
    for m in _BOX_RE.finditer(text):
        i = m.end()
        while i < len(text) and text[i] in " \t":
            i += 1
        if i < len(text) and text[i] == "{":
            got = braced_group(text, i)
            arg = got[0] if got else None
        elif i > m.end():  # `\boxed 5`: at least one space, then a bare argument
            bare = _BARE_ARG_RE.match(text, i)
            arg = bare.group(0) if bare else None
        else:
            arg = None
        if arg is not None and arg.strip():
            out.append(arg.strip())
    return out


def final_answer_block(text: str) -> str | None:
    """The body of the last final-answer block (to the end of the text if it is not closed), or None."""
    opener, closer = T.open_tag(T.FINAL_ANSWER), T.close_tag(T.FINAL_ANSWER)
    start = text.rfind(opener)
    if start < 0:
        return None
    start += len(opener)
    end = text.find(closer, start)
    return text[start:] if end < 0 else text[start:end]


def extract_answer(text: str) -> str | None:
    """The model's final answer: the last box inside the final-answer block if it has one, else the last box."""
    block = final_answer_block(text)
    if block is not None:
        boxes = boxed_contents(block)
        if boxes:
            return boxes[-1]
    boxes = boxed_contents(text)
    return boxes[-1] if boxes else None


# ---------------------------------------------------------------------------------------------- equivalence
def _as_latex(answer: str) -> str:
    """Wrap a bare answer so math-verify's LaTeX extractor finds it (it looks for `$...$` or `\\boxed{}`)."""
    s = answer.strip()
    if s.startswith("$") or _BOX_RE.search(s):
        return s
    return "\\boxed{" + s + "}"


def _same_text(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def _verify_here(pred: str, gold: str, timeout_s: float) -> bool:
    """math-verify with its own (signal-based) time limits; only valid in a main thread."""
    from math_verify import parse, verify  # heavy import (sympy): only when grading

    seconds = max(1, math.ceil(timeout_s))  # signal.alarm takes whole seconds
    gold_parsed = parse(_as_latex(gold), parsing_timeout=seconds)
    pred_parsed = parse(_as_latex(pred), parsing_timeout=seconds)
    if not gold_parsed or not pred_parsed:
        return False
    # verify() is not symmetric: gold goes first.
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=seconds))


# Seconds a worker may take beyond its three math-verify time limits (process scheduling on a busy machine).
_WORKER_SLACK_S = 5.0


class _Worker:
    """One grading subprocess speaking JSON lines on stdin/stdout: [pred, gold, timeout_s] -> true/false.

    A plain `python -c` child, not multiprocessing: multiprocessing's spawn re-imports the caller's main script,
    which breaks scripts without an `if __name__ == "__main__"` guard.
    """

    def __init__(self, start_limit_s: float = 120.0):
        cmd = [sys.executable, "-c", "from sprint.eval.grading import _worker_main; _worker_main()"]
        # stderr is dropped: math-verify logs a warning per timeout, which would tear progress bars apart.
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, bufsize=1)
        if self._read_line(start_limit_s) != "ready":
            self.kill()
            raise RuntimeError(f"grading worker did not start within {start_limit_s:.0f} s; run "
                               f"`{sys.executable} -c 'import math_verify'` to see why")

    def _read_line(self, limit_s: float) -> str | None:
        ready, _, _ = select.select([self.proc.stdout], [], [], limit_s)
        if not ready:
            return None
        line = self.proc.stdout.readline()
        return line.strip() if line else None

    def ask(self, pred: str, gold: str, timeout_s: float) -> bool | None:
        """The verdict, or None when the worker did not answer in time or died (it is then unusable)."""
        try:
            self.proc.stdin.write(json.dumps([pred, gold, timeout_s]) + "\n")
            self.proc.stdin.flush()
        except OSError:
            return None
        # parse(gold), parse(pred) and verify each get timeout_s inside the worker; allow them all plus slack.
        line = self._read_line(3 * max(1, math.ceil(timeout_s)) + _WORKER_SLACK_S)
        return None if line is None else line == "true"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


def _worker_main() -> None:
    """Body of a grading subprocess (see `_Worker`)."""
    import math_verify  # noqa: F401  (imported before "ready" so no request is timed with the sympy import)

    proto = sys.stdout
    sys.stdout = sys.stderr  # nothing but verdicts may reach the protocol stream
    proto.write("ready\n")
    proto.flush()
    for line in sys.stdin:
        pred, gold, timeout_s = json.loads(line)
        try:
            ok = _verify_here(pred, gold, timeout_s)
        except Exception:  # a crash in sympy on odd input is a "not equivalent", not a dead worker
            ok = False
        proto.write(("true" if ok else "false") + "\n")
        proto.flush()


class _WorkerPool:
    """Idle grading workers, shared by all non-main threads; one worker per concurrent caller."""

    def __init__(self):
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()

    def verify(self, pred: str, gold: str, timeout_s: float) -> bool:
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        if worker is None:
            worker = _Worker()
        verdict = worker.ask(pred, gold, timeout_s)
        if verdict is None:  # stuck past its own alarm: kill it rather than let it burn a core
            worker.kill()
            return False
        with self._lock:
            self._idle.append(worker)
        return verdict

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for w in idle:
            w.kill()


_POOL = _WorkerPool()
atexit.register(_POOL.close)


def is_equiv(pred: str | None, gold: str, timeout_s: float = 5) -> bool:
    """True when `pred` and `gold` are the same mathematical answer according to math-verify.

    Both may be bare LaTeX ("\\frac{1}{2}"), `$...$` or `\\boxed{...}`. Safe to call from any thread: off the main
    thread the check runs in a worker process. Each math-verify step gets `timeout_s` seconds; a timeout is False.
    """
    if pred is None or not pred.strip():
        return False
    if _same_text(pred, gold):
        return True
    if threading.current_thread() is threading.main_thread():
        return _verify_here(pred, gold, timeout_s)
    return _POOL.verify(pred, gold, timeout_s)


async def is_equiv_async(pred: str | None, gold: str, timeout_s: float = 5) -> bool:
    """`is_equiv` without blocking the event loop."""
    return await asyncio.to_thread(is_equiv, pred, gold, timeout_s)


# ---------------------------------------------------------------------------------------------- grading
@dataclass
class GradeResult:
    """The extracted answer, whether it matches the gold answer, and the status shown in reports."""

    answer: str | None
    correct: bool
    status: Status


def grade(text: str, gold: str, timeout_s: float = 5) -> GradeResult:
    """Extract the answer of a model output and compare it with `gold`."""
    answer = extract_answer(text)
    if answer is None:
        return GradeResult(None, False, "no_answer")
    ok = is_equiv(answer, gold, timeout_s)
    return GradeResult(answer, ok, "correct" if ok else "wrong")


@dataclass
class Accuracy:
    """Accuracy over ALL graded items; `no_answer` items count as wrong (and are also counted on their own)."""

    n: int
    correct: int
    wrong: int
    no_answer: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else float("nan")

    def __str__(self) -> str:
        return (f"{self.correct}/{self.n} correct ({100 * self.accuracy:.1f}%), {self.wrong} wrong "
                f"(of which {self.no_answer} no answer)")


def accuracy(results: Iterable[GradeResult]) -> Accuracy:
    """Summarize grades. `wrong` includes the items with no answer."""
    n = correct = no_answer = 0
    for r in results:
        n += 1
        correct += bool(r.correct)
        no_answer += r.status == "no_answer"
    return Accuracy(n=n, correct=correct, wrong=n - correct, no_answer=no_answer)
