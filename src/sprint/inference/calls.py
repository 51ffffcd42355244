"""Making one model call and recording it: streaming, timing, token counts, early stop, and live events.

Every call of the orchestrator and the baselines goes through `CallLog.call`, so all of them produce the same
`CallRecord`s (times relative to the start of the question) and the same events for a live view.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from sprint.backends.base import Backend, GenerationParams
from sprint.inference.records import CallRecord

log = logging.getLogger(__name__)


@dataclass
class RunEvent:
    """Something that happened during a run, for live displays.

    kinds: "call_start", "call_text" (`text` = all text so far), "call_end" (`text` = final text), "stage_end",
    "repair" (`text` = the detail), "done".
    """

    kind: str
    role: str | None = None
    stage: int | None = None
    prompt_id: str | None = None
    text: str = ""
    record: CallRecord | None = None


class RunObserver(Protocol):
    """Receives the events of a run as they happen (must be quick: it runs on the event loop)."""

    def __call__(self, event: RunEvent) -> None: ...


#: `on_text(text_so_far, start_of_new_text) -> stop?`: lets a caller react to streamed text and end the call early.
TextHook = Callable[[str, int], bool]


class CallLog:
    """Runs calls on a backend and keeps their records in order of start."""

    def __init__(self, backend: Backend, observer: RunObserver | None = None):
        self.backend = backend
        self.observer = observer
        self.t0 = time.perf_counter()
        self.records: list[CallRecord] = []
        self._observer_failed = False
        # Records whose prompt is counted by tokenizing it, done after the run (`count_prompts`): a SPRINT stage's
        # planner prompt is 1,000-4,000 tokens, milliseconds of tokenizing on the event loop, and a call that the
        # orchestrator cuts short returns only after its record is complete, on the stage's critical path.
        self._uncounted: list[tuple[CallRecord, str]] = []

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def count_prompts(self) -> None:
        """Fill in `prompt_tokens` of the records whose backend did not report it (a call cut short, a server
        without usage) by tokenizing their prompts: call it once the run is timed (until then those are 0)."""
        for rec, prompt in self._uncounted:
            rec.prompt_tokens = self.backend.count_tokens(prompt)
        self._uncounted = []

    def emit(self, event: RunEvent) -> None:
        if self.observer is None:
            return
        try:
            self.observer(event)
        except Exception:  # a broken display must not lose the run
            if not self._observer_failed:
                log.exception("run observer failed; further observer errors are ignored")
            self._observer_failed = True

    async def call(self, role: str, stage: int | None, prompt_id: str | None, prompt: str, params: GenerationParams,
                   *, on_text: TextHook | None = None, attempt: int = 1,
                   dispatch_tokens: int | None = None) -> tuple[str, CallRecord]:
        """Stream one generation to its end (or until `on_text` says stop) and return (text, record).

        The record is in `records` from the start, so calls that fail or are cancelled are recorded too (with
        `error`); exceptions propagate after recording.
        """
        rec = CallRecord(role=role, stage=stage, prompt_id=prompt_id, start_s=self.now(), attempt=attempt,
                         dispatch_tokens=dispatch_tokens)
        self.records.append(rec)
        self.emit(RunEvent("call_start", role, stage, prompt_id, record=rec))
        text, stopped_early, stream = "", False, None
        try:
            stream = self.backend.stream(prompt, params)
            async for delta in stream:
                if not delta:
                    continue
                if rec.ttft_s is None:
                    rec.ttft_s = self.now() - rec.start_s
                before = len(text)
                text += delta
                if self.observer is not None:
                    self.emit(RunEvent("call_text", role, stage, prompt_id, text=text, record=rec))
                if on_text is not None and on_text(text, before):
                    stopped_early = True
                    break
        except asyncio.CancelledError:
            rec.error = "cancelled"
            raise
        except Exception as e:
            rec.error = f"{type(e).__name__}: {e}"
            raise
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                try:
                    await aclose()
                except Exception:  # closing a broken stream must not hide the original error
                    pass
            rec.end_s = self.now()
            if rec.error is not None:
                rec.generated_tokens = self.backend.count_tokens(text) if text else 0
                self.emit(RunEvent("call_end", role, stage, prompt_id, text=text, record=rec))
        done = getattr(stream, "completion", None)
        if done is not None and not stopped_early:
            # The backend's own numbers (server usage, exact token ids) beat re-tokenising the text.
            if done.prompt_tokens:
                rec.prompt_tokens = done.prompt_tokens
            else:
                self._uncounted.append((rec, prompt))
            rec.generated_tokens = done.generated_tokens
            rec.finish_reason = done.finish_reason
        else:
            self._uncounted.append((rec, prompt))
            rec.generated_tokens = self.backend.count_tokens(text) if text else 0
            if stopped_early:
                rec.finish_reason = "repair_stop"
            elif params.max_tokens and rec.generated_tokens >= params.max_tokens:
                rec.finish_reason = "length"
            else:
                rec.finish_reason = "stop"
        self.emit(RunEvent("call_end", role, stage, prompt_id, text=text, record=rec))
        return text, rec
