"""Prompt tokenization that reuses the ids of an earlier prompt the new one extends (the in-process backend's).

Why: in a SPRINT solve every prompt extends an earlier one. The planner's prompt of stage i is its prompt of stage
i-1 plus its plan and the executions; each executor's prompt is the planner's context plus its own subtask. Late in
a solve of the bundled Countdown model these are about 4,000 tokens, 5 ms each to tokenize on a 2-core CPU, seven of
them per stage, on the event loop's thread where they hold up every running stream (BENCHMARKS.md, "Whole solves
with a modelled GPU step").

How, and why it is exact: a Hugging Face fast tokenizer first splits the text at its added tokens (the format's tags
are added tokens of the bundled tokenizer) and tokenizes the pieces between them independently. So if an earlier
prompt P is a prefix of the new prompt T, and P's encoding has an added token t ending at character b, then T's ids
are P's ids up to and including t, followed by the ids of T[b:] tokenized alone. That needs t to be matched in T at
the same place: t must not be part of a longer added token (its text no substring of another added token's text)
and must not strip whitespace around it (`lstrip`/`rstrip`/`single_word` off). It also needs the pieces to be
tokenized independently of where they stand: no normalizer, no `Metaspace` pre-tokenizer (which marks only the
text's first piece), and a post-processor that adds nothing after the text. A tokenizer that does not meet these
conditions is never cut. As a guard, the first `verify` cut encodings are checked against a whole encoding; one
difference turns cutting off for the backend's lifetime (with a warning).
"""

from __future__ import annotations

import json
import logging
from collections import Counter, OrderedDict

log = logging.getLogger(__name__)


class PromptIds:
    """Token ids of prompts (`encode(text, add_special_tokens)`), cutting at added tokens where safe (module doc)."""

    def __init__(self, tokenizer, *, keep: int = 32, verify: int = 8) -> None:
        self.tokenizer = tokenizer
        self.rust = getattr(tokenizer, "backend_tokenizer", None)
        self.keep, self.verify = keep, verify
        self.recent: OrderedDict[tuple[bool, str], tuple[list[int], list[tuple[int, int]]]] = OrderedDict()
        self._candidates: dict[int, str] = {}   # added tokens that strip nothing: id -> text
        self._cuts: dict[int, bool] = {}          # candidates checked so far: id -> safe to cut after
        self.enabled = self.rust is not None and self._safe()
        self.cut = 0   # prompts encoded from an earlier one's ids (for tests and benchmarks)

    # ------------------------------------------------------------------------------------------ setup
    def _safe(self) -> bool:
        """Whether this tokenizer's pieces between added tokens are tokenized independently (module doc), and which
        added tokens are safe places to cut."""
        try:
            spec = json.loads(self.rust.to_str())
        except Exception:   # a tokenizer that cannot describe itself is not cut
            return False
        if spec.get("normalizer") is not None or "Metaspace" in json.dumps(spec.get("pre_tokenizer")):
            return False
        plain, marked = (self.rust.encode("a", add_special_tokens=flag).ids for flag in (False, True))
        if marked[len(marked) - len(plain):] != plain:   # the post-processor appends something after the text
            return False
        for flag in (False, True):   # the wrapper must add nothing of its own (this class calls the Rust tokenizer)
            sample = "a b\n12"
            if list(self.tokenizer(sample, add_special_tokens=flag)["input_ids"]) != \
                    self.rust.encode(sample, add_special_tokens=flag).ids:
                return False
        added = self.rust.get_added_tokens_decoder()
        texts = [tok.content for tok in added.values()]
        # Whether a text is part of another added token is decided per token at its first use (`_is_cut`): checking
        # every pair here would cost seconds at start-up for tokenizers with thousands of added tokens.
        self._joined, self._copies = "\0".join(texts), Counter(texts)
        self._candidates = {i: tok.content for i, tok in added.items()
                            if not (tok.lstrip or tok.rstrip or tok.single_word) and tok.content}
        return any(self._is_cut(i) for i in self._candidates)   # stops at the first safe one

    def _is_cut(self, token_id: int) -> bool:
        """Whether `token_id` is a safe place to cut: an added token that strips nothing and whose text occurs in no
        other added token's text (module doc)."""
        safe = self._cuts.get(token_id)
        if safe is None:
            text = self._candidates.get(token_id)
            # Texts are joined by NUL: an occurrence beyond its own copies lies inside another added token's text
            # (or, for a text holding a NUL, across two: then it is only refused, never wrongly allowed).
            safe = self._cuts[token_id] = text is not None and self._joined.count(text) <= self._copies[text]
        return safe

    @property
    def cut_ids(self) -> frozenset[int]:
        """Every safe place to cut (checks them all: for tests and inspection, not the encoding path)."""
        return frozenset(i for i in self._candidates if self._is_cut(i))

    # ------------------------------------------------------------------------------------------ encoding
    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        if not self.enabled:
            return list(self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])
        key = (add_special_tokens, text)
        hit = self.recent.get(key)
        if hit is not None:
            self.recent.move_to_end(key)
            return list(hit[0])
        ids, offsets = self._from_earlier(text, add_special_tokens)
        if ids is not None and self.verify > 0:
            self.verify -= 1
            whole = self.rust.encode(text, add_special_tokens=add_special_tokens)
            if whole.ids != ids:
                log.warning("prompt tokenization from an earlier prompt's ids differs from a whole encoding; "
                            "prompts are tokenized whole from now on")
                self.enabled = False
                return list(whole.ids)
        if ids is None:
            enc = self.rust.encode(text, add_special_tokens=add_special_tokens)
            ids, offsets = enc.ids, enc.offsets
        else:
            self.cut += 1
        self.recent[key] = (ids, offsets)
        while len(self.recent) > self.keep:
            self.recent.popitem(last=False)
        return list(ids)

    def _from_earlier(self, text: str, add: bool):
        """(ids, offsets) of `text` from the longest kept prompt it extends, cut after that prompt's last safe added
        token; (None, None) when no kept prompt has one."""
        best = None
        for (flag, prev), value in self.recent.items():
            if flag == add and len(prev) < len(text) and text.startswith(prev) and (
                    best is None or len(prev) > len(best[0])):
                best = (prev, value)
        if best is None:
            return None, None
        _, (ids, offsets) = best
        for k in range(len(ids) - 1, -1, -1):
            if self._is_cut(ids[k]):
                b = offsets[k][1]
                tail = self.rust.encode(text[b:], add_special_tokens=False)
                return (ids[:k + 1] + tail.ids,
                        offsets[:k + 1] + [(s + b, e + b) for s, e in tail.offsets])
        return None, None
