"""`sprint.inference.calls.CallLog`: a call cut short is recorded with its prompt counted after the run."""

from __future__ import annotations

import asyncio

from sprint.backends.base import GenerationParams, ScriptedBackend
from sprint.inference.calls import CallLog


class CountingBackend(ScriptedBackend):
    """Records every text it is asked to count."""

    def __init__(self, script):
        super().__init__(script)
        self.counted: list[str] = []

    def count_tokens(self, text: str) -> int:
        self.counted.append(text)
        return super().count_tokens(text)


def test_a_call_cut_short_counts_its_prompt_only_when_asked():
    """The orchestrator cuts calls short on the stage's critical path: the record is complete without tokenizing
    the (long) prompt, whose count `count_prompts` fills in once the run is timed. The text is counted at once."""
    prompt = "word " * 500 + "Question?"
    backend = CountingBackend(lambda p: "one two three <tag> four five six")
    log = CallLog(backend)

    async def go():
        return await log.call("planner", 1, None, prompt, GenerationParams(max_tokens=50),
                              on_text=lambda text, start: "<tag>" in text)

    text, rec = asyncio.run(go())
    assert "<tag>" in text and rec.finish_reason == "repair_stop"
    assert prompt not in backend.counted and rec.prompt_tokens == 0
    assert rec.generated_tokens == len(text.split())
    log.count_prompts()
    assert rec.prompt_tokens == 501 and backend.counted.count(prompt) == 1
    log.count_prompts()   # nothing left: counted once
    assert backend.counted.count(prompt) == 1
