"""Bundled models: names resolve to shipped directories, questions are rewritten into the models' phrasing."""

from pathlib import Path

import pytest

from sprint.models import (BUNDLED, DEFAULT_MODEL, countdown_question_order, default_settings, question_adapter,
                           resolve_model)


def test_bundled_names_resolve_to_hf_model_directories():
    for name in BUNDLED:
        path = Path(resolve_model(name))
        assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
        assert (path / "tokenizer.json").is_file()
    assert DEFAULT_MODEL in BUNDLED


def test_bundled_models_together_stay_under_40_mb():
    total = sum(f.stat().st_size for name in BUNDLED for f in Path(resolve_model(name)).iterdir())
    assert total < 40 * 1024 * 1024


def test_other_names_pass_through_unchanged(tmp_path):
    assert resolve_model(str(tmp_path)) == str(tmp_path)
    assert resolve_model("org/some-model") == "org/some-model"


def test_missing_bundled_model_is_a_clear_error(monkeypatch, tmp_path):
    import sprint.models as m

    monkeypatch.setattr(m, "_DATA", tmp_path)
    with pytest.raises(FileNotFoundError, match="countdown-sprint"):
        resolve_model("countdown-sprint")


def test_question_adapter_rewrites_plain_words_for_countdown_models_only():
    adapt = question_adapter("countdown-sprint")
    q = "Using the numbers [19, 36, 55, 7], create an equation that equals 65. Show your work in <think> tags."
    # The bundled models are asked with the numbers largest first (the order of their traces' first line).
    assert adapt(q) == "Using the numbers [55, 36, 19, 7], create an equation that equals 65."
    assert question_adapter("countdown-sequential")(q) == adapt(q)
    assert question_adapter("/some/other/model") is None
    with pytest.raises(ValueError, match="numbers"):
        adapt("What is 2 + 2?")


def test_default_settings_only_for_the_method_the_model_was_trained_for():
    assert default_settings("countdown-sprint", "sprint")["max_exec_tokens"] > 0
    assert default_settings("countdown-sprint", "sequential") == {}
    import json

    from sprint.models import bundled

    context = json.loads((bundled("countdown-sequential").path / "config.json").read_text())["max_position_embeddings"]
    assert default_settings("countdown-sequential", "sequential")["max_tokens"] <= context
    assert default_settings(None, "sprint") == {}


def test_eval_asks_bundled_models_in_their_trained_order_only_when_every_model_is_bundled():
    assert countdown_question_order(["countdown-sprint", "countdown-sequential"]) == "sorted"
    assert countdown_question_order(["countdown-sprint"]) == BUNDLED["countdown-sprint"].question_order
    assert countdown_question_order(["countdown-sprint", "/my/model"]) == "given"
    assert countdown_question_order([None]) == "given"
