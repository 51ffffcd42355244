"""Records -> prompt/completion token rows: validation, the R1 chat-template trap, splits and dry-run statistics."""

from __future__ import annotations

import json

import pytest
from curated_records import sprint_records

from sprint.format import layout, tags as T
from sprint.train.config import load_config
from sprint.train.data import (
    LengthStats,
    encode_records,
    parse_record,
    read_records,
    split_by_question,
    write_records,
)

# A chat template that behaves like DeepSeek-R1-Distill's: system text first, user/assistant markers, an assistant
# turn cut to what follows `</think>`, and a generation prompt that opens `<think>`.
R1_STYLE_TEMPLATE = (
    "{{ bos_token }}{% set ns = namespace(system='') %}"
    "{% for m in messages %}{% if m['role'] == 'system' %}{% set ns.system = m['content'] %}{% endif %}{% endfor %}"
    "{{ ns.system }}"
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}{{ '<|User|>' + m['content'] }}"
    "{% elif m['role'] == 'assistant' %}{% set content = m['content'] %}"
    "{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{ '<|Assistant|>' + content + eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|Assistant|><think>\\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def r1_tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    from sprint.testing.tiny import build_tiny_tokenizer

    d = tmp_path_factory.mktemp("r1tok")
    build_tiny_tokenizer(d, tags_as_tokens=True, chat_template=R1_STYLE_TEMPLATE)
    return AutoTokenizer.from_pretrained(d)


def test_r1_style_template_erases_the_sprint_target_but_our_layout_keeps_it(r1_tokenizer):
    rec = parse_record(sprint_records()[1], "test")
    first_plan = T.open_tag(T.plan_name(1))
    # The trap: rendering the assistant turn with the template drops everything before </think>, i.e. all of it.
    msgs = layout.messages(rec.question, "sprint", rec.completion)
    via_template = r1_tokenizer.apply_chat_template(msgs, tokenize=False)
    assert first_plan in rec.completion and first_plan not in via_template
    assert "Okay, so I need to simplify" not in via_template

    # Our path: template only for [system, user] + generation prompt, the assistant text appended verbatim.
    row = encode_records([rec], r1_tokenizer, progress=False)[0]
    assert row["prompt"] == r1_tokenizer.apply_chat_template(msgs[:2], tokenize=False, add_generation_prompt=True)
    prefix = layout.prompt_prefix(rec.question, "sprint", r1_tokenizer)
    assert row["prompt"] == prefix == layout.generation_start(prefix)  # what inference starts from
    assert row["prompt"].endswith(T.open_tag(T.THINK) + "\n")
    # The body's own <think> opener is in the prompt already; everything after it is the target, byte for byte.
    assert row["completion"] == rec.completion[len(T.open_tag(T.THINK) + "\n"):]
    assert row["completion"].startswith(first_plan) and row["completion"].endswith(T.close_tag(T.THINK))
    ids, mask = row["input_ids"], row["completion_mask"]
    target = [t for t, m in zip(ids, mask) if m]
    assert r1_tokenizer.decode(target[:-1]) == row["completion"] and target[-1] == r1_tokenizer.eos_token_id
    assert r1_tokenizer.decode([t for t, m in zip(ids, mask) if not m]) == row["prompt"]
    assert ids.count(r1_tokenizer.bos_token_id) == 1  # the template writes BOS; no second one from tokenizing


def test_plain_layout_without_template(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    rec = parse_record(sprint_records()[1], "test")
    row = encode_records([rec], tok, progress=False)[0]
    # Inference starts from the question block plus the <think> opener (layout.generation_start); so does training.
    start = f"{T.open_tag(T.QUESTION)}\n{rec.question.strip()}\n{T.close_tag(T.QUESTION)}\n\n{T.open_tag(T.THINK)}\n"
    assert row["prompt"] == start == layout.generation_start(layout.prompt_prefix(rec.question, "sprint", tok))
    assert row["prompt"] + row["completion"] == layout.prompt_prefix(rec.question, "sprint", tok) + rec.completion
    assert row["completion"].startswith(T.open_tag(T.plan_name(1)))
    assert len(row["input_ids"]) == row["prompt_tokens"] + row["completion_tokens"]
    assert sum(row["completion_mask"]) == row["completion_tokens"]


def test_record_errors_name_line_and_field(tmp_path, records_file):
    good = json.loads(records_file.read_text().splitlines()[0])
    bad_role = dict(good, messages=good["messages"][1:])
    other_system = dict(good, messages=[{"role": "system", "content": "Be brief."}] + good["messages"][1:])
    path = write_records([good, bad_role], tmp_path / "bad.jsonl")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2 .*roles"):
        read_records(path)
    with pytest.raises(ValueError, match="system prompt differs"):
        parse_record(other_system, "x")
    with pytest.raises(ValueError, match="field 'format'"):
        parse_record(dict(good, format="other"), "x")
    (tmp_path / "broken.jsonl").write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(ValueError, match=r"broken\.jsonl:2: not valid JSON"):
        read_records(tmp_path / "broken.jsonl")


def test_format_filter_and_mixed_files(records_file):
    assert [r.format for r in read_records(records_file, "sprint")] == ["sprint"] * 3
    assert [r.format for r in read_records(records_file, "sequential")] == ["sequential"] * 2
    with pytest.raises(ValueError, match="mix formats"):
        read_records(records_file)


def test_split_keeps_questions_whole(records_file):
    recs = read_records(records_file, "sprint")
    recs = recs + [parse_record(dict(sprint_records()[0], id="again"), "x")]  # a second trace of question 1
    train, held = split_by_question(recs, 0.3, seed=0)
    assert held and train and len(train) + len(held) == len(recs)
    assert not {r.question for r in train} & {r.question for r in held}
    assert split_by_question(recs, 0.3, seed=0) == (train, held)


def test_dry_run_reports_lengths_and_truncation(records_file, tiny_model_dir, capsys):
    from transformers import AutoTokenizer

    from sprint.train.trainer import dry_run

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    lengths = sorted(len(r["input_ids"]) for r in encode_records(read_records(records_file, "sprint"), tok,
                                                                  progress=False))
    max_length = lengths[1]  # the longest one is over
    cfg = load_config(None, [f"data.train={records_file}", "data.format=sprint", f"model.name_or_path={tiny_model_dir}",
                             f"data.max_length={max_length}"])
    result = dry_run(cfg, progress=False)
    stats = result.metrics["data"]["train"]
    assert (stats["n"], stats["min"], stats["max"], stats["p50"]) == (3, lengths[0], lengths[2], lengths[1])
    assert stats["mean"] == pytest.approx(sum(lengths) / 3)
    assert stats["n_over"] == 1 and result.metrics["data"]["dropped_over_max_length"] == ["trajectory_data_1"]
    assert result.metrics["plan"]["steps_per_epoch"] == 2 and result.output_dir is None
    out = capsys.readouterr().out
    assert "1 longer than max_length" in out and "p95" in out


def test_length_stats_percentiles():
    rows = [{"id": str(n), "input_ids": [0] * n, "completion_tokens": n - 1} for n in range(1, 101)]
    s = LengthStats.from_rows(rows, max_length=90)
    assert (s.min, s.p50, s.p95, s.max, s.n_over) == (1, 50, 95, 100, 10)
