"""Helpers for tests and demos that must run offline: a tiny tokenizer and a tiny Llama model built locally."""

from sprint.testing.tiny import build_tiny_llama, build_tiny_tokenizer

__all__ = ["build_tiny_llama", "build_tiny_tokenizer"]
