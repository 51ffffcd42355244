"""Incremental stop-string detection for streamed text, shared by every backend that yields deltas.

A stop string may arrive split over several deltas (several tokens), so a streaming backend may only release text
that can no longer turn out to be the start of a stop string. `StopScanner` holds back exactly the longest tail of
the text seen so far that is a proper prefix of some stop string; everything before it is safe to yield.
"""

from __future__ import annotations

from typing import Sequence


class StopScanner:
    """Feeds on text deltas; returns the part that is safe to emit and notices the first complete stop string."""

    def __init__(self, stop: Sequence[str]):
        self.stop = [s for s in stop if s]
        # A held tail ends with a proper prefix of a stop string, so its last character is one of these: when the
        # text ends with none of them nothing is held (the common case, checked once per token).
        self._tail_chars = frozenset(c for s in self.stop for c in s[:-1])
        self.text = ""          # everything accepted so far (cut at the stop string once one is found)
        self.emitted = 0        # characters of `text` already released
        self.hit: str | None = None

    def feed(self, delta: str) -> str:
        """Add `delta`; return newly safe text. After a stop string is found, further deltas are ignored."""
        if self.hit is not None or not delta:
            return ""
        self.text += delta
        # No stop string can start before `emitted`: text before it was released only when no tail from there on
        # could still grow into a stop string.
        best, which = -1, None
        for s in self.stop:
            i = self.text.find(s, self.emitted)
            if i != -1 and (best == -1 or i < best):
                best, which = i, s
        if which is not None:
            self.hit = which
            self.text = self.text[:best]
            return self._release(best)
        return self._release(len(self.text) - self._held_tail())

    def flush(self) -> str:
        """The generation ended without a stop string: release what was held back."""
        return self._release(len(self.text))

    def _held_tail(self) -> int:
        """Length of the longest suffix of `text` (after `emitted`) that is a proper prefix of a stop string."""
        hold = 0
        tail_room = len(self.text) - self.emitted
        if not tail_room or self.text[-1] not in self._tail_chars:
            return 0
        for s in self.stop:
            for k in range(min(len(s) - 1, tail_room), hold, -1):
                if self.text.endswith(s[:k]):
                    hold = k
                    break
        return hold

    def _release(self, upto: int) -> str:
        if upto <= self.emitted:
            return ""
        out = self.text[self.emitted:upto]
        self.emitted = upto
        return out
