"""The line splitter: the released numbering rules, and lossless spans."""

from sprint.curate.lines import numbered, span_text, split_lines


def texts(s):
    return [ln.text for ln in split_lines(s)]


def test_sentences_and_newlines():
    assert texts("Okay, so x = 3. Hmm, let's see. First, add.") == ["Okay, so x = 3.", "Hmm, let's see.",
                                                                     "First, add."]
    assert texts("Wait?\nYes!\n\nSo 2 + 2 = 4") == ["Wait?", "Yes!", "So 2 + 2 = 4"]


def test_protected_dots():
    assert texts("We get 3.5 here. Then stop.") == ["We get 3.5 here.", "Then stop."]
    assert texts("Solve for x. Then check.") == ["Solve for x. Then check."]  # " x." never ends a line
    assert texts("See e.g. the U.S. rule. Next.") == ["See e.g. the U.S. rule.", "Next."]
    assert texts("Steps:\n1. add\n2. multiply") == ["Steps:", "1. add", "2. multiply"]
    assert texts("Conjugate pairs... right? Yes.") == ["Conjugate pairs...", "right?", "Yes."]
    assert texts("Hmm..., fine.") == ["Hmm..., fine."]


def test_quotes_stay_with_their_sentence():
    assert texts('He said "done." Then left.') == ['He said "done."', "Then left."]


def test_dots_then_newline_give_a_blank_line():
    lines = split_lines("Wait...\nNo.")
    assert [ln.text for ln in lines] == ["Wait...", "", "No."]
    assert lines[1].blank


def test_spans_are_lossless():
    text = "A first  sentence.   Second one?\n\nThird:\n1. item   one.\nLast"
    lines = split_lines(text)
    assert all(text[ln.start:ln.end] == ln.text for ln in lines)
    assert span_text(text, lines, 1, len(lines)) == text.strip()
    assert span_text(text, lines, 1, 2) == "A first  sentence.   Second one?"
    # Everything outside the lines is whitespace.
    covered = set()
    for ln in lines:
        covered.update(range(ln.start, ln.end))
    assert all(text[i].isspace() for i in range(len(text)) if i not in covered)
    assert numbered(lines).splitlines()[0] == "[1] A first sentence."


def test_span_out_of_range():
    import pytest

    lines = split_lines("One. Two.")
    with pytest.raises(ValueError, match="outside 1-2"):
        span_text("One. Two.", lines, 2, 3)
