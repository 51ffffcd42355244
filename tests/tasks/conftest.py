"""Fixtures of the Countdown tests: the task's tokenizer, built once per session (offline, about a second)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def countdown_tokenizer_dir(tmp_path_factory):
    from sprint.tasks.countdown.tokenizer import build_countdown_tokenizer

    path = tmp_path_factory.mktemp("countdown_tokenizer")
    build_countdown_tokenizer(path)
    return path


@pytest.fixture(scope="session")
def countdown_tokenizer(countdown_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(countdown_tokenizer_dir)
