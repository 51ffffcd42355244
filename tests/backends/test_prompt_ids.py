"""`PromptIds`: prompts are tokenized from cached pieces between safe added tokens, giving exactly the whole
encoding; unsafe tokenizers are never cut; a difference found by the guard turns pieces off."""

from __future__ import annotations

import logging

import pytest

from sprint.backends.prompt_ids import PromptIds


@pytest.fixture(scope="module")
def bundled_tokenizer():
    from transformers import AutoTokenizer

    from sprint.models import resolve_model

    return AutoTokenizer.from_pretrained(str(resolve_model("countdown-sprint")))


def _whole(tok, text, add=False):
    return list(tok(text, add_special_tokens=add)["input_ids"])


def _stage_prompts():
    """A planner's prompts and its executors' as a SPRINT solve makes them (tags, superscript digits, newlines)."""
    q = "<Question>\nUsing the numbers [88, 83, 15, 5], create an equation that equals 80.\n</Question>\n\n<think>\n"
    plan = q + "<Plan_1>\n[88 83 15 5] 80\n<prompt_1.1>88+83</prompt_1.1>\n<prompt_1.2>88-83</prompt_1.2>\n</Plan_1>\n"
    execs = [plan + "<Execution_1>\n<execution_1.1>\n", plan + "<Execution_1>\n<execution_1.2>\n"]
    stage2 = (plan + "<Execution_1>\n<execution_1.1>\n88+83=171 [171 15 5] 80: 186> 156>\n</execution_1.1>\n"
              "<execution_1.2>\n88-83=5 [15 5 5] 80: 20< 10<\nSolution (⁸⁸-⁸³)*¹⁵+⁵\n</execution_1.2>\n"
              "</Execution_1>\n<Plan_2>\n")
    return [q, plan, *execs, stage2, stage2 + "Solution (⁸⁸-⁸³)*¹⁵+⁵ \n</Plan_2>\n<Final_answer>\n"]


def test_prompts_that_extend_earlier_ones_get_the_whole_encodings_ids(bundled_tokenizer):
    ids = PromptIds(bundled_tokenizer, verify=0)   # no guard: every cut encoding is compared here instead
    assert ids.enabled and ids.cut_ids
    for add in (False, True):
        for text in _stage_prompts():
            assert ids.encode(text, add) == _whole(bundled_tokenizer, text, add), text
    assert ids.reused >= 9   # all but the first prompt took pieces from earlier ones
    again = _stage_prompts()[3]
    assert ids.encode(again, False) == _whole(bundled_tokenizer, again)   # a repeated prompt: kept ids


def test_pieces_are_reused_between_safe_added_tokens_only(bundled_tokenizer):
    ids = PromptIds(bundled_tokenizer, verify=0)
    ids.encode("no tags here 12", False)
    assert ids.encode("no tags here 123", False) == _whole(bundled_tokenizer, "no tags here 123") and ids.reused == 0
    ids.encode("<Plan_1>\n1", False)
    # It extends the prompt before: that one's ids through "<Plan_1>" (its last cut), then "\n12" tokenized anew.
    assert ids.encode("<Plan_1>\n12", False) == _whole(bundled_tokenizer, "<Plan_1>\n12") and ids.reused == 1
    assert "\n12" in ids.pieces and "\n1" in ids.pieces
    # An execution handed over alone (`prepare`), then a prompt holding it elsewhere: its piece comes from the cache.
    execution = "<execution_1.2>\n88-83=5 [15 5 5] 80: 20< 10<\n</execution_1.2>"
    ids.encode(execution, False)
    ids.pieces.pop("\n", None)   # only the execution's own piece can be reused below
    later = "<Plan_1>\nx\n</Plan_1>\n<Execution_1>\n" + execution + "\n</Execution_1>"
    assert ids.encode(later, True) == _whole(bundled_tokenizer, later, True) and ids.reused == 2
    assert "\n88-83=5 [15 5 5] 80: 20< 10<\n" in ids.pieces


def test_a_prompt_extending_a_kept_one_is_scanned_from_that_ones_last_cut(bundled_tokenizer):
    ids = PromptIds(bundled_tokenizer, verify=0)
    stage = _stage_prompts()
    ids.encode(stage[1], False)
    ids.pieces.clear()   # the kept prompt's ids stand for its text up to its last cut, not its pieces
    longer = stage[1] + "<Execution_1>\n<execution_1.1>\n"
    assert ids.encode(longer, False) == _whole(bundled_tokenizer, longer)
    assert set(ids.pieces) <= {"\n"}   # nothing before the kept prompt's last cut was tokenized again


def test_a_safe_tags_text_inside_a_longer_tokens_match_is_no_cut():
    """Added tokens "ab" and "b|": in "xab|" the tokenizer matches "ab" (leftmost), so "b|" is no cut there although
    it is safe elsewhere."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    t = Tokenizer(models.WordLevel({"[UNK]": 0, "x": 1, "|": 2}, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    fast = PreTrainedTokenizerFast(tokenizer_object=t, unk_token="[UNK]")
    fast.add_tokens(["ab", "b|"])
    ids = PromptIds(fast, verify=0)
    assert ids.enabled
    for text in ("xab|", "xb|x", "ab|b|", "b|ab", "x|x"):
        assert ids.encode(text, False) == list(fast(text, add_special_tokens=False)["input_ids"]), text


def test_tokenizers_whose_pieces_depend_on_their_place_are_never_cut():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    def build(normalizer=None, pre=None):
        t = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1, "b": 2, "▁a": 3}, unk_token="[UNK]"))
        if normalizer is not None:
            t.normalizer = normalizer
        t.pre_tokenizer = pre or pre_tokenizers.Whitespace()
        fast = PreTrainedTokenizerFast(tokenizer_object=t, unk_token="[UNK]")
        fast.add_tokens(["<T>"])
        return fast

    assert PromptIds(build()).enabled   # the same tokenizer without the two is cut
    assert not PromptIds(build(normalizer=normalizers.Lowercase())).enabled
    assert not PromptIds(build(pre=pre_tokenizers.Metaspace())).enabled
    from tokenizers import AddedToken

    whole_words = build()
    whole_words.add_tokens([AddedToken("<W>", single_word=True)])   # matched only as a word: not found by a regex
    assert not PromptIds(whole_words).enabled


def test_the_guard_turns_cutting_off_at_a_difference(bundled_tokenizer, caplog):
    ids = PromptIds(bundled_tokenizer, verify=2)
    first, second = _stage_prompts()[:2]
    ids.encode(first, False)
    ids._by_pieces = lambda text, add, base: ([5, 6, 7], (0, 0), True)   # a wrong encoding
    with caplog.at_level(logging.WARNING):
        assert ids.encode(second, False) == _whole(bundled_tokenizer, second)
    assert not ids.enabled and "tokenized whole from now on" in caplog.text
    assert ids.encode(second + "x", False) == _whole(bundled_tokenizer, second + "x")


def test_added_tokens_inside_longer_ones_are_no_cut():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    t = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=t, unk_token="[UNK]")
    fast.add_tokens(["<T>", "<T>x", "<U>"])
    ids = PromptIds(fast)
    by_text = {fast.convert_ids_to_tokens(i): i for i in ids.cut_ids}
    assert "<T>" not in by_text and {"<T>x", "<U>"} <= set(by_text)   # "<T>" could grow into "<T>x"
