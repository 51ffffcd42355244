"""Executor training records hold, byte for byte, the prompts the orchestrator sends its executors.

The replayed reference trajectories run through `solve` on the scripted backend; every executor prompt it sends is
compared with the training prompt `sprint.train.data` builds from the executor record of the same trajectory (and
the token ids with the ones `TransformersBackend` would feed), and the training target with what the executor writes.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from sprint.backends.base import ScriptedBackend, apply_stop
from sprint.curate.records import executor_records_of
from sprint.format import executor_stop_strings, layout, parse, render, render_body
from sprint.format import tags as T
from sprint.inference import SprintConfig, solve
from sprint.testing.replay import replay_model
from sprint.testing.scripted import call_kind
from sprint.train.data import build_texts, parse_record, prompt_token_ids

# A DeepSeek-R1-Distill-like template: its generation prompt already opens <think> (the layout's other branch).
R1_STYLE_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}"
    "{% elif m['role'] == 'user' %}{{ '<|User|>' + m['content'] }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|Assistant|><think>\\n' }}{% endif %}"
)


@pytest.fixture(scope="module", params=["plain", "r1_template"])
def tokenizer(request, tmp_path_factory):
    from transformers import AutoTokenizer

    from sprint.testing.tiny import build_tiny_tokenizer

    d = tmp_path_factory.mktemp(f"tok_{request.param}")
    build_tiny_tokenizer(d, tags_as_tokens=True,
                         chat_template=R1_STYLE_TEMPLATE if request.param == "r1_template" else None)
    return AutoTokenizer.from_pretrained(d)


_BACKENDS: dict[int, SimpleNamespace] = {}


def inference_ids(tokenizer, prompt: str) -> list[int]:
    """The ids `TransformersBackend` feeds for `prompt` (its own method, without loading a model; one stand-in per
    tokenizer, so prompts that extend earlier ones reuse their ids as in a run)."""
    from sprint.backends.prompt_ids import PromptIds
    from sprint.backends.transformers_backend import TransformersBackend

    backend = _BACKENDS.setdefault(id(tokenizer), SimpleNamespace(add_special_tokens=None, tokenizer=tokenizer,
                                                                  _prompt_ids=PromptIds(tokenizer)))
    return TransformersBackend.encode_prompt(backend, prompt)


def test_executor_records_equal_the_orchestrator_executor_prompts(shared_dir, tokenizer):
    files = sorted((shared_dir / "fixtures" / "sprint_reference" / "math500_sprint").glob("*.txt"))[:15]
    checked = 0
    for path in files:
        ref = parse(path.read_text())
        if not ref.ok or ref.preamble or not ref.think:
            continue
        records = executor_records_of(path.stem, ref.question, None, render_body(ref), ref)
        backend = ScriptedBackend(replay_model(ref), chunk=7)
        result = asyncio.run(solve(ref.question, backend, SprintConfig(max_stages=len(ref.stages) + 2), tokenizer))
        assert result.trajectory == render(ref) and not result.repairs, path.name
        sent = {call_kind(p)[2]: p for p, _ in backend.calls if call_kind(p)[0] == "executor"}
        assert sorted(sent) == sorted(r["id"].split("#exec-")[1] for r in records), path.name
        start = layout.generation_start(layout.prompt_prefix(ref.question, "sprint", tokenizer))
        for rec in records:
            name = rec["id"].split("#exec-")[1]
            i, j = (int(x) for x in name.split("."))
            body = rec["messages"][2]["content"]
            prompt, completion = build_texts(parse_record(rec, rec["id"]), tokenizer)
            # The training prompt is the orchestrator's executor prompt, byte for byte and token for token.
            assert prompt == sent[name], (path.name, name)
            assert prompt == start + body[len(T.open_tag(T.THINK) + "\n"): rec["completion_start"]]
            assert prompt_token_ids(tokenizer, prompt) == inference_ids(tokenizer, sent[name]), (path.name, name)
            # The target is exactly what the executor writes: its execution, then its own stop string.
            assert completion == replay_model(ref)(sent[name]) == body[rec["completion_start"]:]
            text, stop = apply_stop(completion, executor_stop_strings(i, j))
            assert stop == T.close_tag(T.execution_name(i, j)) and text + stop == completion
            checked += 1
    assert checked >= 30
