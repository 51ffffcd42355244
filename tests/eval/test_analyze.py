"""`sprint.eval.analyze` on the paper's released trajectories, with a tiny local tokenizer and MATH-500 gold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sprint.eval.analyze import analyze, file_key, match_key, read_items
from sprint.format import load_token_counter, parse, parse_sequential, sequential_metrics, trajectory_metrics


@pytest.fixture(scope="module")
def ref_dir(shared_dir) -> Path:
    return shared_dir / "fixtures" / "sprint_reference"


@pytest.fixture(scope="module")
def gold_file(shared_dir) -> Path:
    return shared_dir / "data" / "math500.jsonl"


@pytest.fixture(scope="module")
def counter(tiny_tokenizer_dir):
    return load_token_counter(str(tiny_tokenizer_dir))


@pytest.fixture(scope="module")
def sprint_result(ref_dir, gold_file, tiny_tokenizer_dir):
    return analyze(ref_dir / "math500_sprint", str(tiny_tokenizer_dir), gold=gold_file, executors=2, progress=False)


def test_matching_rule():
    assert match_key("test/algebra/1004.json") == "test_algebra_1004"
    assert file_key(Path("planner_trajectory_test_algebra_1004.txt")) == "test_algebra_1004"
    assert file_key(Path("base_model_trajectory_test_algebra_1004.txt")) == "test_algebra_1004"
    assert file_key(Path("my_run_test_algebra_1004.txt")) == "my_run_test_algebra_1004"


def test_sprint_reference_summary(sprint_result):
    s = sprint_result.summary
    assert (s.n, s.parsed, s.invalid, s.invalid_reasons) == (100, 99, 1, {"stray_tag": 1})
    assert (s.answered, s.no_answer, s.graded, s.unmatched) == (100, 0, 100, 0)
    assert s.accuracy == s.correct / 100
    assert 0.85 <= s.accuracy <= 0.97  # the paper reports about 90% for SPRINT on MATH-500
    assert s.mean_sequential_tokens < s.mean_total_tokens
    assert s.mean_sequential_tokens <= s.mean_sequential_tokens_with_executors <= s.mean_total_tokens
    assert s.mean_stages > 1 and s.mean_prompts_per_stage > 1


def test_sprint_reference_items(sprint_result, ref_dir, counter):
    items = {it.id: it for it in sprint_result.items}
    first = items["test/algebra/1004.json"]  # 2^8 = 4^x: x = 4
    assert first.source == "planner_trajectory_test_algebra_1004.txt"
    assert (first.parsed, first.answer, first.correct, first.status) == (True, "4", True, "correct")
    m = trajectory_metrics(parse((ref_dir / "math500_sprint" / first.source).read_text()), counter)
    assert (first.sequential_tokens, first.total_tokens, first.stages) == (m.sequential_tokens, m.total_tokens,
                                                                          m.stages)
    assert first.sequential_tokens_with_executors == m.sequential_tokens_with(2)
    wrong = items["test/algebra/858.json"]  # the released trajectory answers 1; the gold answer is -2
    assert (wrong.answer, wrong.correct, wrong.status) == ("1", False, "wrong")
    bad = items["test/prealgebra/1787.json"]
    assert not bad.parsed and bad.invalid_reasons == ["stray_tag"]
    assert bad.diagnostics[0]["pos"] > 0


def test_sequential_reference(ref_dir, gold_file, tiny_tokenizer_dir, counter):
    result = analyze(ref_dir / "math500_rft", str(tiny_tokenizer_dir), gold=gold_file, fmt="sequential",
                     executors=3, progress=False)
    s = result.summary
    boxless = [p for p in (ref_dir / "math500_rft").glob("*.txt") if "\\boxed" not in p.read_text()]
    assert (s.n, s.parsed, s.graded) == (50, 50, 50)
    assert s.no_answer == len(boxless) > 0
    assert s.correct <= s.answered and s.accuracy == s.correct / 50  # no answer counts as wrong
    assert s.mean_sequential_tokens == s.mean_total_tokens == s.mean_sequential_tokens_with_executors
    assert s.mean_stages == 0
    item = result.items[0]
    text = (ref_dir / "math500_rft" / item.source).read_text()
    assert item.total_tokens == sequential_metrics(parse_sequential(text), counter).total_tokens


def test_without_gold_correct_is_null(ref_dir, counter):
    result = analyze(ref_dir / "curation" / "trajectory_data", counter, progress=False)
    assert result.summary.accuracy is None and result.summary.graded == 0
    assert all(it.correct is None and it.status is None and it.answer for it in result.items)
    assert [it.id for it in result.items] == ["trajectory_data_1", "trajectory_data_2", "trajectory_data_5"]


def _jsonl_from(ref_dir, tmp_path, field="trajectory", n=3, id_field="unique_id"):
    files = sorted((ref_dir / "math500_sprint").glob("*.txt"))[:n]
    path = tmp_path / "runs.jsonl"
    with open(path, "w") as f:
        for p in files:
            uid = "test/" + p.stem.split("_", 3)[3].replace("_", "/", 1) + ".json"
            f.write(json.dumps({id_field: uid, field: p.read_text(), "extra": 1}) + "\n")
    return path


def test_jsonl_input_with_partial_gold(ref_dir, tmp_path, counter, gold_file):
    path = _jsonl_from(ref_dir, tmp_path, field="output")
    items = read_items(path)
    assert [it.key for it in items] == ["test_algebra_1004", "test_algebra_1078", "test_algebra_1143"]
    assert items[0].source == "runs.jsonl:1"
    gold = tmp_path / "gold.jsonl"
    rows = [json.loads(line) for line in gold_file.read_text().splitlines()]
    gold.write_text("\n".join(json.dumps(r) for r in rows if r["unique_id"] != "test/algebra/1078.json"))
    result = analyze(path, counter, gold=gold, progress=False)
    assert result.summary.graded == 2 and result.summary.unmatched == 1
    assert [it.correct is None for it in result.items] == [False, True, False]


def test_jsonl_field_option_and_errors(ref_dir, tmp_path, counter):
    path = _jsonl_from(ref_dir, tmp_path, field="completion")
    with pytest.raises(ValueError, match="no trajectory field"):
        read_items(path)
    assert len(read_items(path, text_field="completion")) == 3
    with pytest.raises(ValueError, match="record 1 has no text field 'text'"):
        read_items(path, text_field="text")
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n')
    with pytest.raises(ValueError, match="'a' appears 2 times"):
        read_items(dup)


def test_gold_that_matches_nothing_is_an_error(ref_dir, tmp_path, counter):
    gold = tmp_path / "gold.jsonl"
    gold.write_text('{"unique_id": "other/1.json", "answer": "1"}\n')
    with pytest.raises(ValueError, match="matches a record"):
        analyze(ref_dir / "curation" / "trajectory_data", counter, gold=gold, progress=False)


def test_bad_inputs(tmp_path, counter):
    with pytest.raises(FileNotFoundError):
        analyze(tmp_path / "missing", counter, progress=False)
    with pytest.raises(ValueError, match="no .txt"):
        analyze(tmp_path, counter, progress=False)
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="executors"):
        analyze(tmp_path, counter, executors=0, progress=False)
    with pytest.raises(ValueError, match="format"):
        analyze(tmp_path, counter, fmt="other", progress=False)  # type: ignore[arg-type]


def test_untagged_text_is_invalid_in_sprint_format(tmp_path, counter):
    (tmp_path / "plain.txt").write_text("I think the answer is \\boxed{3}.")
    item = analyze(tmp_path, counter, progress=False).items[0]
    assert not item.parsed and item.answer == "3"
    assert item.invalid_reasons == ["no_stage", "stray_text"]
