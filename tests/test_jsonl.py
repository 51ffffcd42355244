import pytest

from sprint.jsonl import iter_jsonl


def test_yields_line_numbers_and_skips_blank_lines(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"a": 1}\n\n   \n{"b": [2]}\n')
    assert list(iter_jsonl(p)) == [(1, {"a": 1}), (4, {"b": [2]})]
    p.write_text("")
    assert list(iter_jsonl(p)) == []


def test_bad_json_names_file_and_line(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"a": 1}\n{not json\n')
    with pytest.raises(ValueError, match=r"a\.jsonl:2: not valid JSON \(.+\)"):
        list(iter_jsonl(p))
    with pytest.raises(ValueError, match=r"^train:2: not valid JSON"):
        list(iter_jsonl(p, label="train"))


def test_non_object_is_an_error(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"a": 1}\n\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"a\.jsonl:3: expected a JSON object, got list"):
        list(iter_jsonl(p))

