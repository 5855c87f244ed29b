"""A short excerpt of a matching document with the searched words marked.

Segments, not HTML: ``[Segment("…blood ", False), Segment("pressure", True), …]``, so
the API generates no markup and the portal's templates escape every piece.

A word matches a searched word when, after case folding and removing diacritics, the
two share a stem (a light English suffix strip: ``reports``/``reported``/``reporting``
all become ``report``) or the word starts with the searched word's stem. That is
deliberately close to what the index's stemmers (PostgreSQL's english Snowball,
FTS5's porter) treat as the same word, so the highlighted words are the ones that
made the document match; it is a presentation aid and never decides what matches.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

WIDTH = 220
# How much of each source is looked at for an excerpt: about six pages of text. A page
# of 50 hits scans at most 50 of these (about 3 ms each, bench/snippets.py), whatever the
# documents' length. A match further in is still found by the index; it is just not
# what the excerpt shows.
SCAN_CHARS = 20_000
_WORD = re.compile(r"[^\W_]+")
_SPACE = re.compile(r"\s+")
# Suffixes stripped by _stem, longest first; each keeps a stem of at least 3 letters.
_SUFFIXES = (
    "ational",
    "ations",
    "ation",
    "ingly",
    "ings",
    "ing",
    "edly",
    "ness",
    "ment",
    "ies",
    "ied",
    "es",
    "ed",
    "ly",
    "s",
    "e",
)
# As search.terms.MIN_PREFIX: a lone word that short also found the words it begins.
_MIN_PREFIX = 3


@dataclass(frozen=True)
class Segment:
    text: str
    match: bool


def fold(word: str) -> str:
    """Case-folded, without diacritics (``Café`` -> ``cafe``), as ``remove_diacritics``."""
    decomposed = unicodedata.normalize("NFKD", word.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            stem = word[: -len(suffix)]
            if suffix in ("ies", "ied"):
                stem += "y"
            elif suffix in ("s", "es") and word.endswith("ss"):
                continue
            return stem
    return word


@dataclass(frozen=True)
class Matcher:
    """Decides whether a word of a text is one of the searched words.

    Each distinct word is folded and stemmed once per search: a page of long extracted
    texts repeats the same few thousand words, and folding every occurrence cost 86 ms
    for one 85 KB text (a 15,000-word scan), 4 s for a page of 50.
    """

    stems: frozenset[str]
    _seen: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def for_words(cls, words: Iterable[str]) -> Matcher:
        return cls(frozenset(_stem(fold(w)) for w in words if w))

    def __call__(self, word: str) -> bool:
        known = self._seen.get(word)
        if known is None:
            known = self._seen[word] = self._decide(word)
        return known

    def _decide(self, word: str) -> bool:
        folded = fold(word)
        if _stem(folded) in self.stems:
            return True
        return any(len(s) >= _MIN_PREFIX and folded.startswith(s) for s in self.stems)


def _spans(text: str, matcher: Matcher) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in _WORD.finditer(text) if matcher(m.group())]


def _window(text: str, spans: Sequence[tuple[int, int]], width: int) -> tuple[int, int]:
    """The stretch of about ``width`` characters holding the most matches."""
    if not spans:
        return 0, min(len(text), width)
    return around(text, densest_start(spans, width), width)


def densest_start(spans: Sequence[tuple[int, int]], width: int) -> int:
    """Where the most matches start within three quarters of ``width`` (spans non-empty)."""
    best_start, best_count = spans[0][0], 0
    # Spans are in text order, so the matches within reach of each start are a run
    # that only moves forward: one pass, not one count per span.
    reach = 0
    for index, (start, _) in enumerate(spans):
        reach = max(reach, index)
        while reach < len(spans) and spans[reach][0] < start + width * 3 // 4:
            reach += 1
        count = reach - index
        if count > best_count:
            best_start, best_count = start, count
    return best_start


def around(text: str, start: int, width: int) -> tuple[int, int]:
    """About ``width`` characters from a quarter width before ``start``, cut at spaces."""
    begin = max(0, start - width // 4)
    if begin > 0:
        space = text.rfind(" ", 0, begin)
        begin = space + 1 if space != -1 and begin - space < 30 else begin
    end = min(len(text), begin + width)
    if end < len(text):
        space = text.find(" ", end)
        end = space if space != -1 and space - end < 30 else end
    return begin, end


def excerpt(text: str, spans: Sequence[tuple[int, int]], *, width: int = WIDTH) -> list[Segment]:
    """Up to ``width`` characters of ``text`` around its matches (``spans``), marked."""
    begin, end = _window(text, spans, width)
    segments: list[Segment] = []
    position = begin
    for start, stop in spans:
        if start < begin or stop > end:
            continue
        if start > position:
            segments.append(Segment(text[position:start], False))
        segments.append(Segment(text[start:stop], True))
        position = stop
    if position < end:
        segments.append(Segment(text[position:end], False))
    if begin > 0:
        segments.insert(0, Segment("…", False))
    if end < len(text):
        segments.append(Segment("…", False))
    return [Segment(_SPACE.sub(" ", s.text), s.match) for s in segments if s.text]


def snippet(sources: Sequence[str | None], words: Matcher | Iterable[str]) -> list[Segment]:
    """An excerpt of the first source with a match (content, then metadata).

    When no source holds a searched word (a match in a field not shown, or past the first
    ``SCAN_CHARS`` of a long text), the first non-empty source is excerpted unmarked.
    """
    # One Matcher for a whole page of hits keeps its memo of decided words.
    matcher = words if isinstance(words, Matcher) else Matcher.for_words(words)
    present = [s[:SCAN_CHARS] for s in sources if s and s.strip()]
    for source in present:
        spans = _spans(source, matcher)
        if spans:
            return excerpt(source, spans)
    return excerpt(present[0], []) if present else []
