"""The Countdown tokenizer: numbers, words and tags as single tokens, lossless, and the exact fast counter."""

from __future__ import annotations

from sprint.tasks.countdown.problems import generate
from sprint.tasks.countdown.tokenizer import CountdownTokenCounter
from sprint.tasks.countdown.traces import TraceConfig, build_records, build_traces
from sprint.testing.tiny import format_special_tokens


def _ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_special_tokens_and_no_chat_template(countdown_tokenizer):
    tok = countdown_tokenizer
    assert tok.bos_token == "<|bos|>" and tok.eos_token == "<|eos|>" and tok.pad_token == "<|pad|>"
    assert len({tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}) == 3
    assert not getattr(tok, "chat_template", None)
    assert len(tok) < 4000


def test_tags_digits_and_words_are_single_tokens(countdown_tokenizer):
    tok = countdown_tokenizer
    for tag in format_special_tokens():
        assert len(_ids(tok, tag)) == 1, tag
    for n in (0, 7, 99, 100, 999, 1000, 12345):
        assert len(_ids(tok, str(n))) == len(str(n)) and len(_ids(tok, f" {n}")) == len(str(n))
    assert tok.convert_ids_to_tokens(_ids(tok, " 185")) == ["Ġ1", "8", "5"]  # the space stays on the first digit
    for w in ("Explore", " Solution", " Dead", " end", "Using", " equation"):
        assert len(_ids(tok, w)) == 1, w
    line = "96+89=185 [185 25] 210 160"
    assert len(_ids(tok, line)) == 22


def test_whole_numbers_mode(tmp_path):
    from transformers import AutoTokenizer

    from sprint.tasks.countdown.tokenizer import build_countdown_tokenizer, pretoken_pattern

    build_countdown_tokenizer(tmp_path, numbers="whole")
    tok = AutoTokenizer.from_pretrained(tmp_path)  # the mode survives saving: it is in the pre-tokenizer
    for n in (0, 7, 99, 100, 999, 1000):
        assert len(_ids(tok, str(n))) == 1 and len(_ids(tok, f" {n}")) == 1
    assert len(_ids(tok, "12345")) == 2  # above max_value: falls back to smaller pieces
    assert len(_ids(tok, "96+89=185 [185 25] 210 160")) == 11
    assert "\\d+" in pretoken_pattern(tok)
    texts = ["96+89=185 [185 25] 210 160\nExplore 7*8=56", "<Plan_1> 12345"]
    assert CountdownTokenCounter(tok)(texts) == [len(_ids(tok, t)) for t in texts]


def test_unknown_number_mode_is_named():
    import pytest

    from sprint.tasks.countdown.tokenizer import build_countdown_tokenizer

    with pytest.raises(ValueError, match="numbers must be one of digits, whole"):
        build_countdown_tokenizer(None, numbers="bytes")
    with pytest.raises(ValueError, match="numbers"):
        TraceConfig(numbers="roman")


def test_decoding_is_lossless(countdown_tokenizer):
    tok = countdown_tokenizer
    for text in ["<Question>\nUsing the numbers [23, 45, 12, 7], create an equation that equals 61.\n</Question>",
                 "é ü 12345 \n\n\n\n x  y\t z <Plan_1><prompt_1.1> \\boxed{((45+23)-7)*1}", "Based on execution_1.2:"]:
        assert tok.decode(_ids(tok, text)) == text


def test_fast_counter_matches_the_tokenizer(countdown_tokenizer):
    tok = countdown_tokenizer
    texts = ["", "\n", "a\n\n\n\n\nb\n", "é <Plan_99> <Plan_1>\n\n<prompt_1.1> x  y\t\n 12345"]
    for i, p in enumerate(generate("train", 30, 9)):
        t = build_traces(p, TraceConfig())
        if not t.reason:
            texts += [r["messages"][-1]["content"] for r in build_records(str(i), t)]
    counter = CountdownTokenCounter(tok, max_cached_lines=50)  # tiny table: exercises the reset path too
    expected = [len(_ids(tok, t)) for t in texts]
    assert counter(texts) == expected
    assert counter(texts[::-1]) == expected[::-1]
