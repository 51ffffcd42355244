"""Validation of LLM answers (steps and DAG) and the bounded re-ask loop, with an in-test chat double."""

import asyncio
import json
import re

import pytest

from sprint.backends.base import Completion
from sprint.curate.cache import DiskCache
from sprint.curate.extract import (AnswerError, Rejected, build_dag, extract_steps, parse_dag_answer,
                                   parse_steps_answer)
from sprint.curate.lines import split_lines
from sprint.curate.llm import CachedChat, LLMEndpoint, UsageLedger

TRACE = ("Let me think. We need the sum. First compute alpha. alpha = 2 + 3 = 5. So alpha is 5. "
         "Now compute beta. beta = 4 * 2 = 8. Then the sum is 13. Check: 5 + 8 = 13. Good. Done.")
LINES = split_lines(TRACE)  # 11 lines


def answer(*steps):
    return json.dumps({"steps": [dict({"id": i + 1, "description": "", "plan": None, "prompt": None,
                                       "execution": None, "comment": None}, **s) for i, s in enumerate(steps)]})


GOOD = answer({"plan": [1, 3], "prompt": "Compute a.", "execution": [4, 5]},
              {"plan": [6, 6], "prompt": "Compute b.", "execution": [7, 8], "comment": [9, 9]},
              {"plan": [10, 11]})


def test_valid_answer_gives_steps_sliced_from_trace():
    steps = parse_steps_answer(GOOD, TRACE, LINES)
    assert len(LINES) == 11
    assert [s.id for s in steps] == [1, 2, 3]
    assert steps[0].plan == "Let me think. We need the sum. First compute alpha."
    assert steps[0].execution == "alpha = 2 + 3 = 5. So alpha is 5."
    assert steps[1].comment == "Check: 5 + 8 = 13."
    assert steps[2].execution is None and steps[2].prompt is None
    assert steps[0].execution_lines == (4, 5)


@pytest.mark.parametrize("text,msg", [
    ("", "the answer is empty"),
    ("   \n", "the answer is empty"),
    ('{"steps": [', "not valid JSON"),
    ('{"parts": []}', 'expected an object {"steps"'),
    (answer({"plan": [1, 3]}, {"plan": [3, 11]}), "line 3 is in step 1 (plan) and in step 2 (plan)"),
    (answer({"plan": [1, 5], "prompt": "x", "execution": [4, 11]}), "plan [1, 5] and execution [4, 11] overlap"),
    (answer({"plan": [1, 5]}, {"plan": [7, 11]}), "lines 6 are not in any step"),
    (answer({"plan": [1, 3]}), "lines 4-11 are not in any step"),
    (answer({"plan": [1, 12]}), "outside the lines 1-11"),
    (answer({"plan": [5, 2]}), "reversed"),
    (answer({"plan": [1, 5], "execution": [6, 11]}), "execution lines but no prompt"),
    (answer({"plan": None}), "neither plan nor execution"),
    (answer({"plan": "1-11"}), "must be [first, last]"),
    (answer({"plan": [6, 11]}, {"plan": [1, 5]}), "before the end of step 1"),
    (json.dumps({"steps": [{"id": 2, "plan": [1, 11]}]}), "ids must be 1, 2, 3"),
])
def test_extraction_errors_are_named(text, msg):
    with pytest.raises(AnswerError, match=re.escape(msg)):
        parse_steps_answer(text, TRACE, LINES)


def test_fenced_json_is_accepted():
    assert len(parse_steps_answer("```json\n" + GOOD + "\n```", TRACE, LINES)) == 3


@pytest.mark.parametrize("dag,msg", [
    ({"1": [], "2": [1]}, "step 3 has no entry"),
    ({"1": [], "2": [1], "3": [7]}, "unknown parent 7"),
    ({"1": [], "2": [3], "3": [2]}, "cycle"),
    ({"1": [], "2": [1], "3": [1], "4": [1]}, "unknown step 4"),
    ({"1": [2], "2": [], "3": []}, "comes later"),
    ({"1": [], "2": "1", "3": []}, "must be a list"),
    ({"1": [], "2": ["a"], "3": []}, "must be integers"),
])
def test_dag_errors_are_named(dag, msg):
    steps = parse_steps_answer(GOOD, TRACE, LINES)
    with pytest.raises(AnswerError, match=msg):
        parse_dag_answer(json.dumps({"parents": dag}), steps)


def test_dag_accepts_bare_dict_and_dedupes():
    steps = parse_steps_answer(GOOD, TRACE, LINES)
    assert parse_dag_answer('{"1": [], "2": [1, 1], "3": [2, 1]}', steps) == {1: [], 2: [1], 3: [2, 1]}


class ListChat:
    """Answers from a list, in order; records the messages of every call."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = []

    async def chat(self, messages, params):
        self.calls.append(messages)
        text = self.answers.pop(0)
        return Completion(text=text, generated_tokens=len(text.split()), prompt_tokens=10)


def run_extract(tmp_path, answers, max_attempts=3):
    model = ListChat(answers)
    chat = CachedChat(DiskCache(tmp_path / "cache"), UsageLedger(), concurrency=2)
    ep = LLMEndpoint("m", model)
    coro = extract_steps(chat, ep, "h", "What is the sum?", TRACE, LINES, max_attempts)
    return model, chat, asyncio.run(coro)


def test_reask_quotes_the_error_then_succeeds(tmp_path):
    model, chat, steps = run_extract(tmp_path, ['{"steps": [', GOOD])
    assert len(steps) == 3 and len(model.calls) == 2
    retry = model.calls[1]
    assert retry[-2] == {"role": "assistant", "content": '{"steps": ['}
    assert "not valid JSON" in retry[-1]["content"] and retry[-1]["role"] == "user"
    assert chat.ledger.models["m"].calls == 2


def test_reask_is_bounded_and_rejects_with_the_last_error(tmp_path):
    with pytest.raises(Rejected) as e:
        run_extract(tmp_path, ["", "", answer({"plan": [1, 3]})], max_attempts=3)
    assert e.value.step == "extract" and e.value.code == "invalid_answer"
    assert e.value.reason.startswith("lines 4-11 are not in any step")
    assert e.value.reason.endswith("(after 3 attempts)")


def test_answers_are_cached_and_reused(tmp_path):
    run_extract(tmp_path, ['{"steps": [', GOOD])
    model, chat, steps = run_extract(tmp_path, [])  # no answers left: everything must come from the cache
    assert len(steps) == 3 and model.calls == []
    u = chat.ledger.models["m"]
    assert u.calls == 0 and u.cached_calls == 2


def test_dag_reask(tmp_path):
    steps = parse_steps_answer(GOOD, TRACE, LINES)
    model = ListChat(['{"1": [], "2": [3], "3": [2]}', '{"1": [], "2": [], "3": [1, 2]}'])
    chat = CachedChat(DiskCache(tmp_path / "c"), UsageLedger())
    parents = asyncio.run(build_dag(chat, LLMEndpoint("d", model), "h", "Q", steps))
    assert parents == {1: [], 2: [], 3: [1, 2]}
    assert "cycle" in model.calls[1][-1]["content"]


def test_answer_cut_at_max_tokens_is_not_reasked(tmp_path):
    class Cut(ListChat):
        async def chat(self, messages, params):
            c = await super().chat(messages, params)
            c.finish_reason = "length"
            return c

    model = Cut(['{"steps": [{"id": 1, "plan": [1, '])
    chat = CachedChat(DiskCache(tmp_path / "c"), UsageLedger())
    with pytest.raises(Rejected) as e:
        asyncio.run(extract_steps(chat, LLMEndpoint("m", model), "h", "Q", TRACE, LINES))
    assert e.value.code == "truncated" and "max_tokens (8000)" in e.value.reason and len(model.calls) == 1


def test_backend_failure_is_an_llm_error_and_not_cached(tmp_path):
    from sprint.curate.llm import LLMCallError

    class Down:
        async def chat(self, messages, params):
            raise ConnectionError("server down")

    cache = DiskCache(tmp_path / "c")
    with pytest.raises(LLMCallError, match="server down"):
        asyncio.run(extract_steps(CachedChat(cache, UsageLedger()), LLMEndpoint("m", Down()), "h", "Q", TRACE,
                                  LINES))
    assert len(cache) == 0
