"""Records -> prompt/completion token rows: validation, the R1 chat-template trap, splits and dry-run statistics."""

from __future__ import annotations

import json

import pytest
from curated_records import sprint_records

from sprint.format import layout, tags as T
from sprint.train.config import load_config
from sprint.train import data as data_module
from sprint.train.data import (
    LengthStats,
    auto_num_proc,
    build_dataset,
    encode_columns,
    encode_records,
    prompt_token_ids,
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


@pytest.mark.parametrize("template", [None, R1_STYLE_TEMPLATE])
def test_executor_record_trains_only_the_execution_and_its_closing_tag(tmp_path, template):
    from transformers import AutoTokenizer

    from sprint.curate.records import executor_records_of
    from sprint.format import incremental as F
    from sprint.format import parse
    from sprint.testing.tiny import build_tiny_tokenizer

    build_tiny_tokenizer(tmp_path, tags_as_tokens=True, chat_template=template)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    full = sprint_records()[1]
    body = full["messages"][2]["content"]
    traj = parse(body)
    records = executor_records_of(full["id"], full["question"], full["answer"], body)
    views = list(F.executor_views(traj))
    assert len(records) == len(views) == len(traj.prompts) >= 2
    rows = encode_records([parse_record(r, r["id"]) for r in records], tok, progress=False)
    start = layout.generation_start(layout.prompt_prefix(full["question"], "sprint", tok))
    for rec, view, row in zip(records, views, rows):
        assert row["role"] == "executor" and rec["id"] == f"{full['id']}#exec-{view.stage}.{view.index}"
        assert row["prompt"] == start + view.context  # what the orchestrator sends executor i.j
        assert row["completion"] == view.target and view.target.endswith(T.close_tag(T.execution_name(view.stage,
                                                                                                      view.index)))
        ids, mask = row["input_ids"], row["completion_mask"]
        labelled = [t for t, m in zip(ids, mask) if m]
        # Loss on exactly: the execution text, its closing tag, EOS; the mask is one contiguous tail.
        assert labelled == tok(view.target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert mask == [0] * row["prompt_tokens"] + [1] * row["completion_tokens"]
        assert ids[: row["prompt_tokens"]] == prompt_token_ids(tok, start + view.context)
        assert tok.decode(labelled[:-1]) == view.target
    # The full record is unchanged: loss on the whole body after the prompt.
    whole = encode_records([parse_record(full, "full")], tok, progress=False)[0]
    assert whole["prompt"] == start and "role" not in full


def test_completion_start_and_role_validation(records_file):
    good = json.loads(records_file.read_text().splitlines()[0])
    n = len(good["messages"][2]["content"])
    assert parse_record(dict(good, completion_start=5, role="executor"), "x").completion_start == 5
    for bad in (-1, n, 2.5, "3", True):
        with pytest.raises(ValueError, match="completion_start"):
            parse_record(dict(good, completion_start=bad), "x")
    with pytest.raises(ValueError, match="field 'role'"):
        parse_record(dict(good, role="critic"), "x")
    with pytest.raises(ValueError, match="executor record"):
        parse_record(dict(good, role="executor"), "x")  # no completion_start: it would train on the context


# ---------------------------------------------------------------------------------------------- columnar path
def _many_records(n_copies: int = 3):
    """The reference SPRINT records, their executor records and the sequential ones, several times over."""
    from curated_records import sequential_records

    from sprint.curate.records import executor_records_of

    full = sprint_records()
    objs = list(full)
    for r in full:
        objs += executor_records_of(r["id"], r["question"], r["answer"], r["messages"][2]["content"])
    objs = [dict(o, id=f"{o['id']}@{k}") for k in range(n_copies) for o in objs]
    seq = [dict(o, id=f"{o['id']}@{k}") for k in range(n_copies) for o in sequential_records()]
    return [parse_record(o, o["id"]) for o in objs], [parse_record(o, o["id"]) for o in seq]


@pytest.mark.parametrize("template", [None, R1_STYLE_TEMPLATE])
def test_columns_serial_and_pool_give_the_rows_of_encode_records(tmp_path, monkeypatch, template):
    from transformers import AutoTokenizer

    from sprint.testing.tiny import build_tiny_tokenizer

    build_tiny_tokenizer(tmp_path, tags_as_tokens=True, chat_template=template)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    sprint_recs, seq_recs = _many_records()
    monkeypatch.setattr(data_module, "ENCODE_CHUNK", 5)  # several chunks, so several pool tasks (forked: inherited)
    for records in (sprint_recs, seq_recs):
        rows = encode_records(records, tok, progress=False)
        serial = encode_columns(records, tok, num_proc=1, progress=False)
        pooled = encode_columns(records, tok, num_proc=3, progress=False)
        assert len(serial) == len(pooled) == len(rows) > 5
        for cols in (serial, pooled):
            assert cols.ids.dtype.name == "int32"
            for i, row in enumerate(rows):
                assert cols.row(i) == {k: row[k] for k in ("id", "role", "input_ids", "completion_mask",
                                                           "prompt_tokens", "completion_tokens")}
        assert LengthStats.from_columns(serial, 2000) == LengthStats.from_rows(rows, 2000)


def test_dataset_columns_match_the_rows(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    records, _ = _many_records(1)
    rows = encode_records(records, tok, progress=False)
    max_length = sorted(len(r["input_ids"]) for r in rows)[len(rows) // 2]
    ds = build_dataset(encode_columns(records, tok, progress=False), max_length)
    assert set(ds.column_names) == {"id", "role", "input_ids", "labels", "length", "prompt_tokens",
                                    "completion_tokens"}  # no texts, no mask: the labels carry it
    assert len(ds) == len(rows)
    for got, row in zip(ds, rows):
        assert got["id"] == row["id"] and got["input_ids"] == row["input_ids"]
        assert got["labels"] == [t if m else -100 for t, m in zip(row["input_ids"], row["completion_mask"])]
        assert got["length"] == min(len(row["input_ids"]), max_length)  # what the trainer sees once truncated
        assert (got["prompt_tokens"], got["completion_tokens"]) == (row["prompt_tokens"], row["completion_tokens"])


def test_list_column_chunks_stay_under_the_arrow_limit():
    import numpy as np

    lengths = np.array([3, 1, 4, 1, 5, 9, 2, 6])
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    values = np.arange(offsets[-1], dtype=np.int32)
    col = data_module._list_column(values, offsets, limit=10)
    assert col.num_chunks > 1 and all(len(c.values) <= 10 for c in col.chunks)
    assert col.to_pylist() == [values[a:b].tolist() for a, b in zip(offsets, offsets[1:])]
    assert data_module._list_column(values, offsets).num_chunks == 1


def test_overflow_drop_keeps_the_other_rows_whole(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    records, _ = _many_records(1)
    rows = encode_records(records, tok, progress=False)
    cols = encode_columns(records, tok, progress=False)
    max_length = sorted(len(r["input_ids"]) for r in rows)[len(rows) // 2]
    kept, dropped = data_module._apply_overflow(cols, max_length, "drop", "train")
    assert dropped == [r["id"] for r in rows if len(r["input_ids"]) > max_length]
    expected = [r for r in rows if len(r["input_ids"]) <= max_length]
    assert [kept.row(i)["input_ids"] for i in range(len(kept))] == [r["input_ids"] for r in expected]
    assert kept.prompt_tokens.tolist() == [r["prompt_tokens"] for r in expected]
    with pytest.raises(ValueError, match="exceed"):
        data_module._apply_overflow(cols, max_length, "error", "train")
    assert data_module._apply_overflow(cols, max_length, "truncate", "train") == (cols, [])


def test_auto_num_proc(monkeypatch):
    import os

    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert auto_num_proc(500_000) == 16
    assert auto_num_proc(500_000, 3) == 3  # data.num_proc wins
    assert auto_num_proc(1_000) == 1  # too few records for a pool to pay off
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # eight ranks on this machine tokenize at the same time
    assert auto_num_proc(500_000) == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert auto_num_proc(500_000) == 4
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert auto_num_proc(500_000) == 1  # 2 CPUs: the tokenizer's own threads do as well
