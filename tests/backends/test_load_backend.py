"""load_backend: HTTP when server URLs are given (model name discovered when omitted), in-process otherwise."""

from __future__ import annotations

import pytest

import sprint.backends as B
from sprint.testing.fake_openai import FakeOpenAIServer


def test_exports_keep_the_old_names():
    for name in ("Backend", "Completion", "GenerationParams", "ScriptedBackend", "apply_stop", "OpenAIBackend",
                 "TransformersBackend", "load_backend"):
        assert hasattr(B, name)


def test_http_when_base_urls_given():
    with FakeOpenAIServer("hi", model="served-model") as s1, FakeOpenAIServer("hi") as s2:
        b = B.load_backend("my-model", [s1.base_url, s2.base_url], max_retries=1)
        assert isinstance(b, B.OpenAIBackend) and b.model == "my-model" and b.max_retries == 1
        assert b.base_urls == [s1.base_url, s2.base_url]
        assert B.load_backend(None, [s1.base_url]).model == "served-model"   # asked the server


def test_model_discovery_fails_clearly():
    with FakeOpenAIServer("hi") as srv:
        url = srv.base_url
    with pytest.raises(B.BackendError, match="did not list the served models"):
        B.load_backend(None, [url])


@pytest.mark.integration
def test_in_process_for_a_local_directory(tiny_llama_dir):
    b = B.load_backend(str(tiny_llama_dir), None, max_batch=2)
    assert isinstance(b, B.TransformersBackend) and b.max_batch == 2 and isinstance(b, B.Backend)


def test_missing_path_and_missing_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model directory"):
        B.load_backend(str(tmp_path / "nope"), None)
    (tmp_path / "file.bin").write_text("x")
    with pytest.raises(FileNotFoundError, match="expected a model directory"):
        B.load_backend(str(tmp_path / "file.bin"), None)
    with pytest.raises(ValueError, match="model"):
        B.load_backend(None, None)
