"""`StopScanner`: stop strings split over deltas, the held tail, the earliest stop, flushing."""

from __future__ import annotations

from sprint.backends.stops import StopScanner


def test_a_stop_string_split_over_deltas_is_found_and_cut():
    sc = StopScanner(["</Plan_1>"])
    out = [sc.feed(d) for d in ["88+83=171 <", "/Pla", "n_1> ignored"]]
    assert out == ["88+83=171 ", "", ""] and sc.hit == "</Plan_1>" and sc.text == "88+83=171 "
    assert sc.feed("more") == "" and sc.flush() == ""


def test_only_a_tail_that_can_still_grow_into_a_stop_string_is_held():
    sc = StopScanner(["</Plan_1>", "<prompt_1."])
    assert sc.feed("a <") == "a "          # "<" may start either stop string
    assert sc.feed("/P") == ""             # "</P" still may
    assert sc.feed("x") == "</Px"          # no longer
    assert sc.feed("text.") == "text."     # ends with "." (in "<prompt_1." but only as its last character): not held
    assert sc.feed(" <prompt_1") == " "    # a proper prefix of "<prompt_1."
    assert sc.flush() == "<prompt_1" and sc.hit is None


def test_the_earliest_stop_string_wins_and_empty_ones_are_ignored():
    sc = StopScanner(["", "BB", "A"])
    assert sc.feed("xxBBA") == "xx" and sc.hit == "BB"
    assert StopScanner([]).feed("anything <") == "anything <"
