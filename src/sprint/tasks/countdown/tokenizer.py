"""A small tokenizer made for Countdown traces: every digit (or, with `numbers="whole"`, every number up to
`max_value`), every word the traces and the question use, and every tag of the SPRINT format is one token; anything
else falls back to single bytes.

Why digits by default: with whole numbers as tokens a small model has to memorise the arithmetic as a table of about
a million facts (every `a+b`, `a-b`, `a*b` up to 1000) and gets the rarer ones wrong; with digits it can learn the
carrying procedure, at about 1.6x the tokens per trace.

How: the text is split into pieces (one digit, or with `whole` a run of digits; a run of letters; or one other
character; each with at most one leading space; runs of newlines), mapped to byte-level characters (so no input is ever unknown), and segmented
by a Unigram model whose pieces all have the same score, which makes Viterbi pick the fewest pieces. The vocabulary
is written out, not learned, so the tokenizer is the same for every data set and needs no training corpus. The
format's tags are added tokens (matched before splitting) and `<|bos|>`, `<|eos|>`, `<|pad|>` are special tokens.
No chat template: the layout then puts the question in the plain `<Question>` block. No BOS is added
automatically (the first token of every example is already the `<Question>` tag).
"""

from __future__ import annotations

from pathlib import Path

from sprint.tasks.countdown.problems import DEFAULT_MAX_VALUE, NUMBER_RANGE

SPECIALS = ["<|bos|>", "<|eos|>", "<|pad|>"]
#: How numbers are split: one token per digit (the default) or one token per number up to `max_value`.
NUMBER_MODES = ("digits", "whole")
DEFAULT_NUMBERS = NUMBER_MODES[0]
#: Pieces: digits (one digit, or with `whole` a run of digits), letters, or one other character, each with at most
#: one leading space; newline runs.
PRETOKEN_PATTERNS = {
    "digits": r" ?\d| ?[A-Za-z]+| ?[^\sA-Za-z\d]|\n+| +|\s",
    "whole": r" ?\d+| ?[A-Za-z]+| ?[^\sA-Za-z\d]|\n+| +|\s",
}


def check_numbers(numbers: str) -> str:
    if numbers not in NUMBER_MODES:
        raise ValueError(f"numbers must be one of {', '.join(NUMBER_MODES)}, got {numbers!r}")
    return numbers


def pretoken_pattern(tokenizer) -> str:
    """The splitting pattern a saved Countdown tokenizer uses (read from its pre-tokenizer)."""
    import json

    spec = json.loads(tokenizer.backend_tokenizer.to_str()).get("pre_tokenizer") or {}
    for pre in spec.get("pretokenizers", [spec]):
        if pre.get("type") == "Split":
            return pre["pattern"]["Regex"]
    raise ValueError("not a Countdown tokenizer: its pre-tokenizer has no Split pattern")
#: Words of the question, the traces and the format's fixed lines (the rest still tokenizes, letter by letter).
WORDS = sorted(set("""
Using the numbers create an equation that equals Reach from Moves Explore Dead end Solution boxed
Based on execution No prompt to execute
You can use basic arithmetic operations and each number only be used once Show your work in Return final answer
tags for example with times div cdot left right frac text Answer answer is
""".split()))
MAX_NEWLINES = 3
DEFAULT_CONTEXT = 2048


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (what the ByteLevel pre-tokenizer uses)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _bl(text: str, table: dict[int, str]) -> str:
    return "".join(table[b] for b in text.encode("utf-8"))


def vocabulary(max_value: int = DEFAULT_MAX_VALUE, numbers: str = DEFAULT_NUMBERS,
               solution_digits: str = "plain") -> list[str]:
    """The Unigram pieces (byte-level characters), in id order after the special tokens. For the Solution lines'
    superscript digits (`trace.solution_digits`, `sprint.tasks.countdown.search.solution_text`) it appends, after
    every other piece (so the ids of a tokenizer without them do not move), one piece per superscript digit
    (`superscript`) and with `superscript_whole` also one per superscript number of a problem (10..99), each with
    and without a leading space."""
    table = _bytes_to_unicode()
    pieces: list[str] = []
    seen: set[str] = set()

    def add(p: str) -> None:
        if p not in seen:
            seen.add(p)
            pieces.append(p)

    for b in range(256):
        add(table[b])
    for c in map(chr, range(33, 127)):
        if not c.isalnum():
            add(_bl(" " + c, table))
    for n in range(10 if check_numbers(numbers) == "digits" else max_value + 1):
        add(str(n))
        add(_bl(f" {n}", table))
    for w in WORDS:
        add(w)
        add(_bl(" " + w, table))
    for k in range(2, MAX_NEWLINES + 1):
        add(_bl("\n" * k, table))
    from sprint.tasks.countdown.search import SUPERSCRIPT_DIGITS, check_solution_digits, solution_text

    if check_solution_digits(solution_digits) != "plain":
        for c in SUPERSCRIPT_DIGITS:  # 2-3 UTF-8 bytes each: without a piece of its own, 2-3 tokens
            add(_bl(c, table))
            add(_bl(" " + c, table))
    if solution_digits == "superscript_whole":
        for n in range(10, NUMBER_RANGE[1] + 1):
            add(_bl(solution_text(str(n), solution_digits), table))
            add(_bl(" " + solution_text(str(n), solution_digits), table))
    return pieces


def _pretoken_regex(numbers: str, solution_digits: str) -> str:
    """The splitting pattern; with `superscript_whole` a run of superscript digits is one piece (one token when it
    is a problem's number), so the planner's far copy of a Solution line copies numbers, not digits that recur
    within the line (`⁴⁰` and `⁴⁸` both start with `⁴`)."""
    from sprint.tasks.countdown.search import SUPERSCRIPT_DIGITS

    pattern = PRETOKEN_PATTERNS[check_numbers(numbers)]
    return f" ?[{SUPERSCRIPT_DIGITS}]+|" + pattern if solution_digits == "superscript_whole" else pattern


def build_countdown_tokenizer(out_dir: str | Path | None = None, *, max_value: int = DEFAULT_MAX_VALUE,
                              max_stage: int = 12, max_prompt: int = 8, context: int = DEFAULT_CONTEXT,
                              numbers: str = DEFAULT_NUMBERS, solution_digits: str = "plain"):
    """Build the Countdown tokenizer (a `PreTrainedTokenizerFast`) and save it to `out_dir` when given;
    `solution_digits` (`trace.solution_digits`): the superscript digits, or numbers, are single tokens too
    (`vocabulary`)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from sprint.testing.tiny import format_special_tokens

    vocab = [(s, 0.0) for s in SPECIALS] + [(p, -1.0) for p in vocabulary(max_value, numbers, solution_digits)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_pretoken_regex(numbers, solution_digits)), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SPECIALS[0], eos_token=SPECIALS[1],
                                   pad_token=SPECIALS[2], model_max_length=context)
    fast.add_tokens(format_special_tokens(max_stage, max_prompt), special_tokens=False)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        fast.save_pretrained(out_dir)
    return fast


class CountdownTokenCounter:
    """Exact token counts for a tokenizer built by `build_countdown_tokenizer`, much faster than encoding.

    The tokenizer splits out added tokens (the tags), splits the rest with its pattern and segments each
    piece on its own. No piece and no tag contains a newline, so a text's count is the sum of its lines' counts plus
    one token per up to `MAX_NEWLINES` newlines of each newline run. Lines repeat a lot in search traces (and the
    same text is counted for several statistics), so line counts are remembered (a bounded table) and each distinct
    piece is encoded once. A `sprint.format.TokenCounter`; a test checks it against the tokenizer itself.
    """

    def __init__(self, tokenizer, max_cached_lines: int = 200_000):
        import re

        self.tokenizer = tokenizer
        added = sorted(tokenizer.get_added_vocab(), key=len, reverse=True)
        if any(not a.startswith("<") for a in added):
            raise ValueError("CountdownTokenCounter expects every added token to start with '<'")
        self._added = re.compile("|".join(map(re.escape, added))) if added else None
        self._pre = re.compile(pretoken_pattern(tokenizer))
        self._piece: dict[str, int] = {}
        self._line: dict[str, int] = {"": 0}
        self._max_lines = max_cached_lines

    def _pieces(self, line: str) -> tuple[int, list[str]]:
        if self._added is None or "<" not in line:  # every added token starts with "<"
            return 0, self._pre.findall(line)
        parts = self._added.split(line)
        return len(parts) - 1, [p for part in parts for p in self._pre.findall(part)]

    def _count_lines(self, lines: set[str]) -> None:
        split = {line: self._pieces(line) for line in lines}
        new = sorted({p for _, ps in split.values() for p in ps if p not in self._piece})
        for i in range(0, len(new), 8192):
            chunk = new[i:i + 8192]
            ids = self.tokenizer(chunk, add_special_tokens=False)["input_ids"]
            self._piece.update(zip(chunk, map(len, ids)))
        piece = self._piece
        for line, (n, ps) in split.items():
            self._line[line] = n + sum(piece[p] for p in ps)

    def __call__(self, texts) -> list[int]:
        per_text = [t.split("\n") for t in texts]
        missing = {line for lines in per_text for line in lines if line not in self._line}
        if missing and len(self._line) + len(missing) > self._max_lines:
            # Start a fresh table, then count everything this call needs.
            self._line = {"": 0}
            missing = {line for lines in per_text for line in lines if line}
        if missing:
            self._count_lines(missing)
        table = self._line
        out = []
        for lines in per_text:
            n = sum(table[line] for line in lines)
            # k newlines in a row leave k - 1 empty strings between their neighbours in split("\n").
            run = 0
            for line in lines[1:]:
                run += 1
                if line:
                    n += -(-run // MAX_NEWLINES)
                    run = 0
            if run:
                n += -(-run // MAX_NEWLINES)
            out.append(n)
        return out
