"""sprint: interleaved planning and parallel execution for reasoning models (SPRINT, NeurIPS 2025)."""

__version__ = "0.1.0"
