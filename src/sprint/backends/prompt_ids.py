"""Prompt tokenization from cached pieces between added tokens (the in-process backend's).

Why: in a SPRINT solve every prompt repeats text that earlier prompts held. The planner's prompt of stage i is its
prompt of stage i-1 plus its plan and the executions; each executor's prompt is the planner's context plus its own
subtask. Late in a solve of the bundled Countdown model these are about 4,000 tokens, 5 ms each to tokenize on a
2-core CPU, seven of them per stage, on the event loop's thread where they hold up every running stream
(BENCHMARKS.md, "Whole solves with a modelled GPU step"); the next planner's prompt is on the stage's critical path.

How, and why it is exact: a Hugging Face fast tokenizer first splits the text at its added tokens (the format's tags
are added tokens of the bundled tokenizer) and tokenizes the pieces between them independently. So a prompt's ids
are the ids of its pieces between safe added tokens, each tokenized alone, and those of the tokens themselves. A
piece seen before (the shared context, an execution handed over when it finished: `prepare`) costs a dict lookup;
only new pieces are tokenized. Added tokens are found as the tokenizer finds them: leftmost, longest first. A token
is a safe place to cut when it is not part of a longer added token (its text no substring of another added
token's text) and strips no whitespace around it (`lstrip`/`rstrip`/`single_word` off); other added tokens stay
inside the pieces. It also needs the pieces to be tokenized independently of where they stand: no normalizer, no
`Metaspace` pre-tokenizer (which marks only the text's first piece), and a post-processor that adds nothing after
the text. A tokenizer that does not meet these conditions is tokenized whole. As a guard, the first `verify`
encodings made of pieces are checked against a whole encoding; one difference turns pieces off for the backend's
lifetime (with a warning).
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter, OrderedDict

log = logging.getLogger(__name__)

#: Tokenizers with more added tokens than this are tokenized whole (a 441-token alternation scans 17,600 characters
#: in 0.5 ms on the CI-class CPU, where tokenizing them whole takes 18 ms).
MAX_ADDED_TOKENS = 4096


class PromptIds:
    """Token ids of prompts (`encode(text, add_special_tokens)`) from cached pieces between added tokens where safe
    (module doc)."""

    def __init__(self, tokenizer, *, keep: int = 32, pieces: int = 8192, verify: int = 8) -> None:
        self.tokenizer = tokenizer
        self.rust = getattr(tokenizer, "backend_tokenizer", None)
        self.keep, self.max_pieces, self.verify = keep, pieces, verify
        # whole prompts: ids and (character, ids) after their last safe cut
        self.recent: OrderedDict[tuple[bool, str], tuple[list[int], tuple[int, int]]] = OrderedDict()
        self.pieces: OrderedDict[str, list[int]] = OrderedDict()                 # texts between cuts
        self._candidates: dict[int, str] = {}   # added tokens that strip nothing: id -> text
        self._cuts: dict[int, bool] = {}          # candidates checked so far: id -> safe to cut after
        self._ids: dict[str, int] = {}            # added token text -> id (texts of one token only)
        self._lead: dict[bool, list[int]] = {}    # what the post-processor puts before the text, per flag
        self._pattern = None
        self.enabled = self.rust is not None and self._safe()
        self.reused = 0   # prompts that took at least one piece from the cache (for tests and benchmarks)

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
        self._lead = {False: [], True: marked[:len(marked) - len(plain)]}
        for flag in (False, True):   # the wrapper must add nothing of its own (this class calls the Rust tokenizer)
            sample = "a b\n12"
            if list(self.tokenizer(sample, add_special_tokens=flag)["input_ids"]) != \
                    self.rust.encode(sample, add_special_tokens=flag).ids:
                return False
        added = self.rust.get_added_tokens_decoder()
        texts = [tok.content for tok in added.values()]
        if len(texts) > MAX_ADDED_TOKENS:   # finding them in a prompt by one regex would cost more than it saves
            return False
        if any(tok.single_word for tok in added.values()):
            # Matched only as whole words: the regex below would find such a token where the tokenizer does not.
            return False
        # Whether a text is part of another added token is decided per token at its first use (`_is_cut`): checking
        # every pair here would cost seconds at start-up for tokenizers with thousands of added tokens.
        self._joined, self._copies = "\0".join(texts), Counter(texts)
        self._candidates = {i: tok.content for i, tok in added.items()
                            if not (tok.lstrip or tok.rstrip or tok.single_word) and tok.content}
        self._ids = {text: i for i, text in self._candidates.items() if self._copies[text] == 1}
        if not any(self._is_cut(i) for i in self._candidates):   # stops at the first safe one
            return False
        # Every added token, longest first at each place: the matches the tokenizer makes (leftmost, then longest).
        # A safe token's text can also sit across a longer token's match; searching for all of them rules that out.
        self._pattern = re.compile("|".join(re.escape(t) for t in sorted(set(texts), key=len, reverse=True) if t))
        return True

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
        ids, cut, reused = self._by_pieces(text, add_special_tokens, self._longest_extended(text, add_special_tokens))
        if self.verify > 0:
            self.verify -= 1
            whole = self.rust.encode(text, add_special_tokens=add_special_tokens).ids
            if whole != ids:
                log.warning("prompt tokenization from pieces between added tokens differs from a whole encoding; "
                            "prompts are tokenized whole from now on")
                self.enabled = False
                return list(whole)
        self.reused += reused
        self.recent[key] = (ids, cut)
        while len(self.recent) > self.keep:
            self.recent.popitem(last=False)
        return list(ids)

    def _longest_extended(self, text: str, add: bool):
        """The kept prompt that `text` extends furthest (ids, (character, ids) after its last safe cut), or None."""
        best, found = 0, None
        for (flag, prev), value in self.recent.items():
            if flag == add and best < len(prev) < len(text) and text.startswith(prev):
                best, found = len(prev), value
        return found

    def _by_pieces(self, text: str, add: bool, base=None):
        """(ids of `text`, (character, ids) after its last safe cut, whether anything came from the cache): the
        pieces between safe added tokens, each from the cache or tokenized alone (and cached), and the tokens' own
        ids. With `base`, a kept prompt that `text` extends, its ids up to its last safe cut stand for the text up to
        there: the scan for added tokens starts at that cut (a safe token's match there is the same in both texts:
        a longer match would need a longer added token holding its text)."""
        if base is not None:   # its cut is (0, its lead) when it has none: the same as no base
            start, n = base[1]
            ids, reused = base[0][:n], start > 0
        else:
            ids, start, reused = list(self._lead[add]), 0, False
        cut = (start, len(ids))
        for m in self._pattern.finditer(text, start):
            token = self._ids.get(m.group())
            if token is None or not self._is_cut(token):
                continue   # an unsafe added token stays inside its piece: the tokenizer handles it there
            reused |= self._add_piece(ids, text[start:m.start()])
            ids.append(token)
            start = m.end()
            cut = (start, len(ids))
        reused |= self._add_piece(ids, text[start:])
        return ids, cut, reused

    def _add_piece(self, ids: list[int], piece: str) -> bool:
        """Append the ids of `piece` (from the cache, or tokenized alone and cached); whether the cache had it."""
        if not piece:
            return False
        hit = self.pieces.get(piece)
        if hit is not None:
            self.pieces.move_to_end(piece)
            ids += hit
            return True
        got = self.rust.encode(piece, add_special_tokens=False).ids
        self.pieces[piece] = got
        while len(self.pieces) > self.max_pieces:
            self.pieces.popitem(last=False)
        ids += got
        return False
