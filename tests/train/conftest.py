"""Fixtures for the training tests: a JSONL of real curated records and a tiny tokenizer + Llama trained on them."""

from __future__ import annotations

from pathlib import Path

import pytest
from curated_records import sequential_records, sprint_records

from sprint.train.data import write_records


@pytest.fixture(scope="session")
def records_file(tmp_path_factory) -> Path:
    """SPRINT records (3) and sequential records (2) in one JSONL file, as `sprint curate` writes them."""
    return write_records(sprint_records() + sequential_records(), tmp_path_factory.mktemp("records") / "train.jsonl")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny BPE tokenizer (format tags as single tokens) trained on the records' text, and a random tiny Llama."""
    from sprint.testing.tiny import build_tiny_llama, build_tiny_tokenizer

    corpus = [m["content"] for r in sprint_records() + sequential_records() for m in r["messages"]]
    d = tmp_path_factory.mktemp("tiny_model")
    tok = build_tiny_tokenizer(d, corpus=corpus, vocab_size=1024, tags_as_tokens=True)
    build_tiny_llama(d, tok, hidden_size=64, layers=2, heads=4, kv_heads=2, intermediate_size=128,
                     max_position_embeddings=8192)
    return d
