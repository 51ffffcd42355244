"""Shared pytest fixtures: the read-only ../shared data and offline tiny Hugging Face artifacts.

Fixtures that need ../shared skip cleanly when it is absent. Nothing here downloads anything.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared (read in place, never copied into the repo); skips the test when it is missing."""
    path = REPO_ROOT.parent / "shared"
    if not path.is_dir():
        pytest.skip(f"{path} is not available")
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    """A small byte-level BPE tokenizer with the SPRINT tags as single tokens, built locally once per session."""
    from sprint.testing import build_tiny_tokenizer

    path = tmp_path_factory.mktemp("tiny_tokenizer")
    build_tiny_tokenizer(path, tags_as_tokens=True)
    return path


def _build_llama(tmp_path_factory, tokenizer_dir: Path, name: str, **kw) -> Path:
    from transformers import AutoTokenizer

    from sprint.testing import build_tiny_llama

    path = tmp_path_factory.mktemp(name)
    build_tiny_llama(path, AutoTokenizer.from_pretrained(tokenizer_dir), **kw)
    return path


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """A random-weight tiny Llama (with the tiny tokenizer saved beside it), built locally once per session."""
    return _build_llama(tmp_path_factory, tiny_tokenizer_dir, "tiny_llama")


@pytest.fixture(scope="session")
def noisy_llama_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """Like tiny_llama_dir, with larger random weights so greedy output varies from token to token (decoding tests)."""
    return _build_llama(tmp_path_factory, tiny_tokenizer_dir, "noisy_llama", initializer_range=0.3)
