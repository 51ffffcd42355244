"""The on-disk cache that makes curation resumable: one JSON file per finished LLM call, written atomically.

Keys are (input hash, step name, model, prompt hash): the same trace, at the same step, asked of the same model with
the same messages and decoding settings, is answered from disk. A file appears only once it is complete (written to
a temporary file in the same directory, flushed to disk, then renamed), so killing the process at any moment leaves
either no entry or a whole one; a rerun redoes only the calls that had not finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def text_hash(*parts: str) -> str:
    """A stable hash of texts (length-prefixed, so ("ab", "c") and ("a", "bc") differ)."""
    h = hashlib.sha256()
    for p in parts:
        b = p.encode("utf-8")
        h.update(len(b).to_bytes(8, "big"))
        h.update(b)
    return h.hexdigest()


def json_hash(obj: Any) -> str:
    return text_hash(json.dumps(obj, sort_keys=True, ensure_ascii=False))


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` so that readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class DiskCache:
    """LLM answers on disk under `root/<aa>/<key>.json` (aa = first two hex digits, to keep directories small)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.writes = 0

    @staticmethod
    def key(input_hash: str, step: str, model: str, prompt_hash: str) -> str:
        return text_hash(input_hash, step, model, prompt_hash)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        p = self._path(key)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            # Cannot happen with atomic writes unless the disk was tampered with; treat as missing and redo.
            return None
        self.hits += 1
        return data

    def put(self, key: str, value: dict) -> None:
        atomic_write_text(self._path(key), json.dumps(value, ensure_ascii=False))
        self.writes += 1

    def __len__(self) -> int:
        return sum(1 for _ in self.root.glob("*/*.json"))
