"""Running SPRINT and its baselines on a backend: the orchestrator, the baselines, their records, batch runs."""

from sprint.inference.calls import CallLog, RunEvent, RunObserver
from sprint.inference.orchestrator import SprintConfig, solve
from sprint.inference.records import BackendTokenCounter, CallRecord, RunResult, critical_path_tokens

__all__ = ["BackendTokenCounter", "CallLog", "CallRecord", "RunEvent", "RunObserver", "RunResult", "SprintConfig",
           "critical_path_tokens", "solve"]
