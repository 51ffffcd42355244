"""Models that ship with the package, by name, and how a question is put to them.

`countdown-sprint` and `countdown-sequential` are the two small Countdown models (same size, same data, same token
budget; one trained on SPRINT traces, one on the sequential traces of the same searches). They answer to their names
wherever a model path is accepted (`sprint run`, `sprint eval`, `sprint demo`, `load_backend`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

_DATA = Path(__file__).resolve().parent / "data" / "models"


@dataclass(frozen=True)
class BundledModel:
    """A model shipped in `sprint/data/models/<name>`; `method` is the inference method it was trained for."""

    name: str
    method: str
    task: str
    #: Limits that fit the model's 4096-token context (used where the user set none).
    settings: tuple[tuple[str, int], ...] = ()
    #: How a question lists its numbers when put to the model (`sprint.tasks.countdown.QUESTION_ORDERS`).
    question_order: str = "given"

    @property
    def path(self) -> Path:
        return _DATA / self.name


#: The bundled Countdown models were trained on questions that list the numbers largest first (the order of their
#: first line, "Reach T from [...]", which they then copy instead of sorting) and are asked so: `sprint run`,
#: `sprint demo`, and `sprint eval` unless told otherwise (`countdown_question_order`).
COUNTDOWN_QUESTION_ORDER = "sorted"
BUNDLED: dict[str, BundledModel] = {
    "countdown-sprint": BundledModel("countdown-sprint", "sprint", "countdown",
                                     (("max_plan_tokens", 384), ("max_exec_tokens", 512), ("max_answer_tokens", 96)),
                                     COUNTDOWN_QUESTION_ORDER),
    "countdown-sequential": BundledModel("countdown-sequential", "sequential", "countdown", (("max_tokens", 4000),),
                                         COUNTDOWN_QUESTION_ORDER),
}
#: What `sprint run` uses when no model is given.
DEFAULT_MODEL = "countdown-sprint"


def bundled(name: str | None) -> BundledModel | None:
    return BUNDLED.get(name) if name else None


def resolve_model(name_or_path: str) -> str:
    """A bundled model's directory for its name; anything else is returned unchanged (a path or hub id)."""
    b = bundled(name_or_path)
    if b is None:
        return name_or_path
    if not (b.path / "config.json").is_file():
        raise FileNotFoundError(f"model: the bundled model {name_or_path!r} is missing from this installation "
                                f"(expected {b.path}); reinstall sprint-reasoning")
    return str(b.path)


def question_adapter(name_or_path: str | None) -> Callable[[str], str] | None:
    """For a model trained on one task's fixed phrasing: a function that rewrites a plain-words question into it."""
    b = bundled(name_or_path)
    if b is None or b.task != "countdown":
        return None
    from sprint.tasks.countdown.problems import parse_question, render_question

    return lambda text: render_question(parse_question(text), b.question_order)


def countdown_question_order(models: list[str | None]) -> str:
    """How `sprint eval` lists a Countdown question's numbers when not told: the bundled models' order when every
    model is a bundled one (and they agree), else the generated order."""
    orders = {b.question_order if (b := bundled(m)) else None for m in models}
    return orders.pop() if len(orders) == 1 and None not in orders else "given"


def default_settings(name_or_path: str | None, method: str) -> dict:
    """The bundled model's limits for `method` (empty for other models or another method)."""
    b = bundled(name_or_path)
    return dict(b.settings) if b is not None and b.method == method else {}
