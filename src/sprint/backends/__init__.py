"""Model backends: the `Backend` Protocol, an OpenAI-compatible HTTP backend, an in-process transformers backend."""

from sprint.backends.base import Backend, Completion, GenerationParams, ScriptedBackend, apply_stop

__all__ = ["Backend", "Completion", "GenerationParams", "ScriptedBackend", "apply_stop"]
