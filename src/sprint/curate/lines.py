"""Numbering a reasoning trace into lines (sentences) for step extraction, without ever rewriting its text.

The step-extraction LLM answers with line ranges, so the numbering must be deterministic and must agree with the
numbering of the released SPRINT artifacts (their recorded ranges refer to it). The rules below reproduce that
numbering; they are the common regex sentence-splitting heuristic:

* A run of newlines ends a line (the newlines belong to the line they end).
* ".", "?" and "!" end a line, unless a newline follows directly (then the newline rule ends it).
* These dots do not end a line: in a number (`3.5`), in a numbered-list marker at the start of a line (`\\n2. `),
  after `Mr Mrs Ms Dr St` (case-sensitive, anywhere), before `com net org io gov edu me`, after a single letter that
  follows a space (` x.`), in dotted acronyms (`U.S.`, `e.g.`), after ` Inc Ltd Jr Sr Co`, in `Ph.D.`.
  An acronym or ` Inc.`-style suffix followed by a sentence starter (`He `, `They `, `However `, ...) does end a line.
* A run of two or more dots ends a line after the run, unless a comma follows. When a newline follows such a run,
  the newline alone forms a (blank) line: the released numbering counts it, so we do too.
* A closing quote right after the punctuation (`."`, `.”`, `!"`, `?"`) stays with the sentence it closes.
* Segments made only of spaces are not lines.

Unlike the released code, nothing is rewritten: every `Line` is a span of the original text, and the text of a
range of lines is sliced from the original (so spacing, quotes and newlines between sentences are preserved).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Private-use characters stand in for "line ends here" and "this dot is not a sentence end" while the rules run;
# they are neither letters, digits, spaces nor punctuation, so no rule can match them by accident.
_STOP = "\ue000"
_KEEP = "\ue001"  # a protected "."

_LETTER = "([A-Za-z])"
_DIGIT = "([0-9])"
_TITLES = "(Mr|St|Mrs|Ms|Dr)[.]"
_SUFFIXES = "(Inc|Ltd|Jr|Sr|Co)"
_STARTERS = (r"(Mr|Mrs|Ms|Dr|Prof|Capt|Cpt|Lt|He\s|She\s|It\s|They\s|Their\s|Our\s|We\s|But\s|However\s|That\s"
             r"|This\s|Wherever)")
_ACRONYM = "([A-Z][.][A-Z][.](?:[A-Z][.])?)"
_DOMAINS = "[.](com|net|org|io|gov|edu|me)"

# (pattern, replacement) applied in order; the order matters (later rules see earlier markers).
_RULES: list[tuple[re.Pattern, object]] = [
    (re.compile(r"(\n\d+)\. "), lambda m: m.group(1) + _KEEP + " "),
    (re.compile(r"\n+"), lambda m: m.group(0) + _STOP),
    (re.compile(_TITLES), lambda m: m.group(1) + _KEEP),
    (re.compile(_DOMAINS), lambda m: _KEEP + m.group(1)),
    (re.compile(_DIGIT + "[.]" + _DIGIT), lambda m: m.group(1) + _KEEP + m.group(2)),
    (re.compile(r"\.{2,},"), lambda m: _KEEP * (len(m.group(0)) - 1) + ","),
    (re.compile(r"\.{2,}"), lambda m: _KEEP * len(m.group(0)) + _STOP),
    (re.compile(r"Ph\.D\."), lambda m: "Ph" + _KEEP + "D" + _KEEP),
    (re.compile(r"\s" + _LETTER + "[.] "), lambda m: m.group(0)[0] + m.group(1) + _KEEP + " "),
    (re.compile(_ACRONYM + " " + _STARTERS), lambda m: m.group(1) + _STOP + " " + m.group(2)),
    (re.compile(_LETTER + "[.]" + _LETTER + "[.]" + _LETTER + "[.]"),
     lambda m: m.group(1) + _KEEP + m.group(2) + _KEEP + m.group(3) + _KEEP),
    (re.compile(_LETTER + "[.]" + _LETTER + "[.]"), lambda m: m.group(1) + _KEEP + m.group(2) + _KEEP),
    (re.compile(" " + _SUFFIXES + "[.] " + _STARTERS), lambda m: " " + m.group(1) + _STOP + " " + m.group(2)),
    (re.compile(" " + _SUFFIXES + "[.]"), lambda m: " " + m.group(1) + _KEEP),
    (re.compile(" " + _LETTER + "[.]"), lambda m: " " + m.group(1) + _KEEP),
]
# Closing quotes: the sentence end moves behind the quote. Done by swapping the two characters (a swap keeps the
# character count, so stop positions still map back to the original text).
_QUOTE_SWAPS = [(".\u201d", "\u201d."), ('."', '".'), ('!"', '"!'), ('?"', '"?')]
_ENDS = re.compile(r"([.?!])(?!\n)")


@dataclass(frozen=True)
class Line:
    """Line `number` (1-based) of a trace: `text[start:end]` of the original, outer whitespace excluded.

    A blank line (start == end) is a newline the numbering counts on its own (see the module docstring).
    """

    number: int
    start: int
    end: int
    text: str

    @property
    def blank(self) -> bool:
        return not self.text


def _stop_positions(text: str) -> list[int]:
    """Offsets into `text` after which a line ends."""
    work = " " + text + "  "  # padding: rules that need a space before/after also fire at the ends
    for pattern, repl in _RULES:
        work = pattern.sub(repl, work)
    for a, b in _QUOTE_SWAPS:
        work = work.replace(a, b)
    work = _ENDS.sub(lambda m: m.group(1) + _STOP, work)
    stops, count = [], 0
    for ch in work:
        if ch == _STOP:
            stops.append(count - 1)  # minus the leading pad
        else:
            count += 1
    return stops


def split_lines(text: str) -> list[Line]:
    """Number `text` into lines. Concatenating the spans (with the whitespace between them) gives `text` back."""
    bounds = [0] + [min(max(p, 0), len(text)) for p in _stop_positions(text)] + [len(text)]
    lines: list[Line] = []
    for a, b in zip(bounds, bounds[1:]):
        seg = text[a:b]
        if not seg.strip(" "):
            continue
        lead = len(seg) - len(seg.lstrip())
        start = a + lead
        end = max(start, a + len(seg.rstrip()))
        lines.append(Line(len(lines) + 1, start, end, text[start:end]))
    return lines


def span_text(text: str, lines: list[Line], first: int, last: int) -> str:
    """The original text of lines first..last (1-based, inclusive), with its own spacing, outer whitespace removed."""
    if not (1 <= first <= last <= len(lines)):
        raise ValueError(f"line range {first}-{last} is outside 1-{len(lines)}")
    return text[lines[first - 1].start:lines[last - 1].end].strip()


def numbered(lines: list[Line]) -> str:
    """The trace as the extraction prompt shows it: one `[n] sentence` per line (newlines inside shown as spaces)."""
    return "\n".join(f"[{ln.number}] {' '.join(ln.text.split())}" for ln in lines)
