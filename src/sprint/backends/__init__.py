"""Model backends: the `Backend` Protocol, an OpenAI-compatible HTTP backend, an in-process transformers backend,
the scripted test double, and `load_backend`, which picks one from command-line style arguments."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from sprint.backends.base import (Backend, BackendError, Completion, CompletionStream, GenerationParams,
                                  ScriptedBackend, apply_stop)
from sprint.backends.openai_http import (BackendHTTPError, DeadlineExceededError, OpenAIBackend, PrefixRouter,
                                         RetriesExhaustedError, StreamInterruptedError)
from sprint.backends.stops import StopScanner
from sprint.backends.transformers_backend import BackendStats, TransformersBackend

__all__ = ["Backend", "BackendError", "BackendHTTPError", "BackendStats", "Completion", "CompletionStream",
           "DeadlineExceededError", "GenerationParams", "OpenAIBackend", "PrefixRouter", "RetriesExhaustedError",
           "ScriptedBackend", "StopScanner", "StreamInterruptedError", "TransformersBackend", "apply_stop",
           "load_backend"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def load_backend(model: str | None, base_urls: Sequence[str] | None = None, **kw) -> Backend:
    """An HTTP backend when server URLs are given (`model` = the served model's name), else the in-process backend
    on `model` (a local directory, a bundled model's name, or a hub id such as "org/name" for online users). Extra keywords go to the
    backend's constructor."""
    if base_urls:
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        return OpenAIBackend(urls, model or _served_model(urls[0], kw.get("api_key_env", "OPENAI_API_KEY")), **kw)
    if not model:
        raise ValueError("model: give a local model directory (or --base-url URL for a running server)")
    from sprint.models import resolve_model

    model = resolve_model(model)   # bundled names such as countdown-sprint
    path = Path(model).expanduser()
    if not path.exists() and not _HUB_ID.match(model):
        raise FileNotFoundError(f"model: no model directory at {model}")
    if path.exists() and not path.is_dir():
        raise FileNotFoundError(f"model: {model} is a file, expected a model directory (config.json, weights)")
    return TransformersBackend(str(path) if path.exists() else model, **kw)


def _served_model(base_url: str, api_key_env: str) -> str:
    """The one model a server lists at /v1/models (for `--base-url` without `--model`)."""
    import os

    import httpx

    from sprint.backends.openai_http import _normalize_url

    url = _normalize_url(base_url) + "/models"
    key = os.environ.get(api_key_env or "", "")
    try:
        resp = httpx.get(url, headers={"Authorization": f"Bearer {key}"} if key else {}, timeout=10.0)
        resp.raise_for_status()
        names = [m["id"] for m in resp.json().get("data", [])]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as e:
        raise BackendError(f"model: not given, and {url} did not list the served models ({type(e).__name__})") \
            from None
    if len(names) != 1:
        raise BackendError(f"model: not given, and {url} serves {len(names)} models ({', '.join(names)}); "
                           "name one with --model")
    return names[0]
