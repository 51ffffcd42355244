"""Evaluation tasks: where the items come from, what question text the model sees, and how an output is graded.

A `Task` loads `TaskItem`s (id, question text, gold answer, metadata such as the MATH level) and grades a model
output against one item. Three tasks are built in:

* MATH-500 (`math500`): a local JSONL file (keys `problem`, `answer`, `unique_id`, `level`, `subject`) or, when
  online, the hub data set `HuggingFaceH4/MATH-500`. Graded with math-verify (`sprint.eval.grading`).
* GPQA-diamond (`gpqa`): the official CSV (`Question`, `Correct Answer`, `Incorrect Answer 1..3`) or the hub data set
  `Idavidrein/gpqa` (config `gpqa_diamond`, gated: log in first). The four options are shuffled with a seed derived
  from a SHA-256 of the question id, so every run and every process shows the same order; the model answers with
  the letter in `\\boxed{}`.
* Countdown (`countdown`): a thin adapter over `sprint.tasks.countdown`: generated held-out test problems (`--n`
  problems from `--seed`, 1000 by default) or a JSONL of problems (`numbers`, `target`), graded by its verifier.
"""

from __future__ import annotations

import csv
import hashlib
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from sprint.eval.grading import GradeResult, boxed_contents, extract_answer, grade
from sprint.format import tags as T


@dataclass
class TaskItem:
    """One evaluation item: `question` is the exact text the model is given; `gold` the reference answer."""

    id: str
    question: str
    gold: str
    meta: dict[str, Any] = field(default_factory=dict)


class Task(Protocol):
    """Loads evaluation items and grades a model output against one of them."""

    name: str

    def load(self, n: int | None = None, seed: int | None = None) -> list[TaskItem]:
        """The items: all of them, or `n` of them (the first `n`, or a seeded sample when `seed` is given)."""
        ...

    def grade(self, output: str, item: TaskItem) -> GradeResult:
        """Extract the answer from a model output and compare it with `item.gold`."""
        ...

    def settings(self) -> dict[str, Any]:
        """Everything that decides which items are loaded and how they are shown (saved with each run)."""
        ...


def select(items: list[TaskItem], n: int | None, seed: int | None) -> list[TaskItem]:
    """The first `n` items, or (with a seed) a seeded sample of `n` kept in file order."""
    if n is None or n >= len(items):
        return items
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if seed is None:
        return items[:n]
    keep = set(random.Random(seed).sample(range(len(items)), n))
    return [it for k, it in enumerate(items) if k in keep]


def _check_unique(items: list[TaskItem], source: str) -> list[TaskItem]:
    seen: dict[str, int] = {}
    for k, it in enumerate(items, start=1):
        if it.id in seen:
            raise ValueError(f"{source}: item {k} repeats id {it.id!r} (first at item {seen[it.id]})")
        seen[it.id] = k
    return items


def model_output(text: str) -> str:
    """The part of a trajectory the model wrote: everything after the question block, when there is one.

    Results hold whole trajectories, question included; GPQA's options "(A) ..." in the question must not be
    mistaken for the model's answer.
    """
    closer = T.close_tag(T.QUESTION)
    k = text.find(closer)
    return text[k + len(closer):] if k >= 0 else text


def read_jsonl(path: Path) -> list[dict]:
    from sprint.jsonl import iter_jsonl

    return [row for _, row in iter_jsonl(path)]


def _field(row: dict, key: str, where: str) -> Any:
    if key not in row or row[key] is None:
        raise ValueError(f"{where}: missing field {key!r}")
    return row[key]


# ---------------------------------------------------------------------------------------------- MATH-500
MATH500_HUB = "HuggingFaceH4/MATH-500"


class Math500Task:
    """MATH-500 from a local JSONL file or the hub; answers graded with math-verify."""

    name = "math500"

    def __init__(self, source: str | Path | None = None, id_field: str = "unique_id"):
        self.source = str(source) if source is not None else MATH500_HUB
        self.id_field = id_field

    def _rows(self) -> list[dict]:
        path = Path(self.source)
        if path.exists():
            return read_jsonl(path)
        if self.source.endswith((".jsonl", ".json")):
            raise FileNotFoundError(f"MATH-500 file not found: {self.source}")
        from datasets import load_dataset  # online path: hub name

        return [dict(r) for r in load_dataset(self.source, split="test")]

    def load(self, n: int | None = None, seed: int | None = None) -> list[TaskItem]:
        items = []
        for k, row in enumerate(self._rows(), start=1):
            where = f"{self.source}: item {k}"
            item_id = str(row.get(self.id_field) or k)
            meta = {key: row[key] for key in ("level", "subject") if key in row}
            items.append(TaskItem(item_id, str(_field(row, "problem", where)).strip(),
                                  str(_field(row, "answer", where)), meta))
        return select(_check_unique(items, self.source), n, seed)

    def grade(self, output: str, item: TaskItem) -> GradeResult:
        return grade(model_output(output), item.gold)

    def settings(self) -> dict[str, Any]:
        return {"task": self.name, "source": self.source, "id_field": self.id_field}


# ---------------------------------------------------------------------------------------------- GPQA
GPQA_HUB = "Idavidrein/gpqa"
GPQA_CONFIG = "gpqa_diamond"
LETTERS = "ABCD"
GPQA_INSTRUCTION = ("Choose the one correct option. Reason it through, then write only the letter of your choice "
                    "(A, B, C or D) inside \\boxed{}, for example \\boxed{A}.")


def option_order(question_id: str, shuffle_seed: int = 0) -> list[int]:
    """A permutation of [0, 1, 2, 3] fixed by the question id (SHA-256, so the same in every process)."""
    digest = hashlib.sha256(f"{shuffle_seed}:{question_id}".encode()).digest()
    order = [0, 1, 2, 3]
    random.Random(int.from_bytes(digest[:8], "big")).shuffle(order)
    return order


def gpqa_question(question: str, options: list[str]) -> str:
    lines = [question.strip(), ""]
    lines += [f"({letter}) {opt.strip()}" for letter, opt in zip(LETTERS, options)]
    return "\n".join(lines) + "\n\n" + GPQA_INSTRUCTION


# Wrappers a model may put around a letter inside \boxed{}: \text{B}, \textbf{B}, \mathrm{B}, (B), "Option B".
_WRAPPER_RE = re.compile(r"\\(?:text|textbf|mathrm|mathbf|textit|mbox)\s*\{([^{}]*)\}")
_BOXED_LETTER_RE = re.compile(r"^\W*(?:option|answer|choice)?\s*[:\-]?\s*\(?\s*([A-Da-d])\s*\)?(?![A-Za-z])")
_ANSWER_LINE_RE = re.compile(r"answer\s*(?:is|:)\s*[:\-]?\s*\**\s*\(?\s*([A-D])\s*\)?(?![A-Za-z])", re.IGNORECASE)
_PAREN_RE = re.compile(r"\(\s*([A-D])\s*\)")


def _letter_in_box(content: str) -> str | None:
    s = content
    for _ in range(3):  # nested wrappers: \text{\textbf{B}}
        s = _WRAPPER_RE.sub(r"\1", s)
    m = _BOXED_LETTER_RE.match(s.strip())
    return m.group(1).upper() if m else None


def extract_letter(text: str) -> str | None:
    """The option letter (A-D) a model chose, or None.

    In order: the final `\\boxed{}` (`\\boxed{B}`, `\\boxed{\\text{B}}`, `\\boxed{(B)}`), then the last
    "Answer: B" / "the answer is (B)", then the last "(B)". Only the model's own text is searched.
    """
    out = model_output(text)
    boxed = extract_answer(out)
    if boxed is not None:
        letter = _letter_in_box(boxed)
        if letter:
            return letter
        # A box that holds the option text instead of its letter is not guessed at.
        if boxed_contents(out):
            return None
    for regex in (_ANSWER_LINE_RE, _PAREN_RE):
        hits = regex.findall(out)
        if hits:
            return hits[-1].upper()
    return None


class GPQATask:
    """GPQA-diamond from the official CSV or the (gated) hub data set; options shuffled per question."""

    name = "gpqa"

    def __init__(self, source: str | Path | None = None, shuffle_seed: int = 0):
        self.source = str(source) if source is not None else GPQA_HUB
        self.shuffle_seed = shuffle_seed

    def _rows(self) -> list[dict]:
        path = Path(self.source)
        if path.exists():
            if path.suffix == ".jsonl":
                return read_jsonl(path)
            with open(path, newline="", encoding="utf-8") as f:
                return list(csv.DictReader(f))
        if self.source.endswith((".csv", ".jsonl")):
            raise FileNotFoundError(f"GPQA file not found: {self.source}")
        from datasets import load_dataset  # online path: gated hub data set, needs `huggingface-cli login`

        return [dict(r) for r in load_dataset(self.source, GPQA_CONFIG, split="train")]

    def load(self, n: int | None = None, seed: int | None = None) -> list[TaskItem]:
        items = []
        for k, row in enumerate(self._rows(), start=1):
            # CSV line numbers count the header, so item k is on line k + 1.
            where = f"{self.source}: item {k} (line {k + 1})"
            question = str(_field(row, "Question", where))
            correct = str(_field(row, "Correct Answer", where))
            wrong = [str(_field(row, f"Incorrect Answer {i}", where)) for i in (1, 2, 3)]
            # The official release gives every question a "Record ID"; without it, the question text names it.
            item_id = (row.get("Record ID") or "").strip() or hashlib.sha256(question.encode()).hexdigest()[:16]
            options = [correct] + wrong
            order = option_order(item_id, self.shuffle_seed)
            shown = [options[i].strip() for i in order]
            letter = LETTERS[order.index(0)]
            meta = {"options": shown, "correct_index": order.index(0)}
            for key in ("Subdomain", "High-level domain"):
                if row.get(key):
                    meta[key.lower().replace(" ", "_").replace("-", "_")] = row[key]
            items.append(TaskItem(item_id, gpqa_question(question, shown), letter, meta))
        return select(_check_unique(items, self.source), n, seed)

    def grade(self, output: str, item: TaskItem) -> GradeResult:
        letter = extract_letter(output)
        if letter is None:
            return GradeResult(None, False, "no_answer")
        ok = letter == item.gold
        return GradeResult(letter, ok, "correct" if ok else "wrong")

    def settings(self) -> dict[str, Any]:
        return {"task": self.name, "source": self.source, "config": GPQA_CONFIG, "shuffle_seed": self.shuffle_seed,
                "instruction": GPQA_INSTRUCTION}


# ---------------------------------------------------------------------------------------------- Countdown
COUNTDOWN_DEFAULT_N = 1000


class CountdownTask:
    """Countdown problems generated by `sprint.tasks.countdown` (or read from a JSONL of problems), graded by its
    verifier: the boxed expression must use every number once and reach the target."""

    name = "countdown"

    def __init__(self, source: str | Path | None = None, split: str = "test", question_order: str = "given"):
        from sprint.tasks.countdown.problems import check_question_order

        self.source = str(source) if source is not None else None
        self.split = split
        self.question_order = check_question_order(question_order)

    def load(self, n: int | None = None, seed: int | None = None) -> list[TaskItem]:
        from sprint.tasks.countdown import load_countdown

        if self.source is None:
            # Generated: the same problems for the same (split, n, seed) on every machine; test targets are
            # held out of training for every seed.
            got = load_countdown(self.split, n or COUNTDOWN_DEFAULT_N, seed or 0, question_order=self.question_order)
            return [TaskItem(it.id, it.question, it.solution or "",
                             {"numbers": list(it.numbers), "target": it.target, "split": it.split}) for it in got]
        items = []
        for k, row in enumerate(read_jsonl(Path(self.source)), start=1):
            where = f"{self.source}: item {k}"
            numbers = [int(x) for x in _field(row, "numbers", where)]
            target = int(_field(row, "target", where))
            # A file's own question text is used as written, unless the numbers are to be listed sorted.
            question = ((self.question_order == "given" and row.get("question"))
                        or self._question(numbers, target, self.question_order))
            items.append(TaskItem(str(row.get("id") or k), question, str(row.get("solution") or ""),
                                  {"numbers": numbers, "target": target}))
        return select(_check_unique(items, self.source), n, seed)

    @staticmethod
    def _question(numbers: list[int], target: int, order: str = "given") -> str:
        from sprint.tasks.countdown import Problem, render_question

        return render_question(Problem(tuple(numbers), target), order)

    def grade(self, output: str, item: TaskItem) -> GradeResult:
        from sprint.tasks.countdown import Problem, check_countdown

        text = model_output(output)
        verdict = check_countdown(text, Problem(tuple(item.meta["numbers"]), int(item.meta["target"])))
        answer = extract_answer(text)
        if answer is None and verdict.ok:  # a bare expression as the whole answer
            answer = text.strip()
        if answer is None:
            return GradeResult(None, False, "no_answer")
        return GradeResult(answer, verdict.ok, "correct" if verdict.ok else "wrong")

    def settings(self) -> dict[str, Any]:
        return {"task": self.name, "source": self.source or "generated by sprint.tasks.countdown.load_countdown",
                "split": self.split,
                # only when not the default: runs made before the option existed resume with the same settings
                **({"question_order": self.question_order} if self.question_order != "given" else {})}


# ---------------------------------------------------------------------------------------------- registry
TASKS: dict[str, Callable[..., Task]] = {"math500": Math500Task, "gpqa": GPQATask, "countdown": CountdownTask}


def load_task(name: str, source: str | Path | None = None, **kwargs) -> Task:
    """A task by name (`math500`, `gpqa`, `countdown`) reading from `source` (a local file, or the hub default)."""
    if name not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {name!r}")
    return TASKS[name](source, **kwargs)
