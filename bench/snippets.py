"""Excerpting a page of search hits: the previous excerpt code against the current one.

A search hit's snippet is cut from the document's decrypted extracted text
(``medvault.search.snippets.snippet``). Until this change every word of the text was
case-folded and stemmed at each occurrence, the densest stretch was found by counting
the later matches from every match (quadratic in the matches), and the whole text was
scanned. Now each distinct word is decided once per search (one ``Matcher`` per page),
the stretch is found in one pass, and only the first ``SCAN_CHARS`` characters are
looked at. This times both on the same synthetic page, in one process:

* ``old``: the removed code, copied below (``old_snippet``);
* ``new``: ``snippet(sources, matcher)`` with one ``Matcher`` for the page, as
  ``search.service.search_page`` calls it.

The page: ``--hits`` documents (default 50, the portal's page), each with a text of
``--words`` words (default 15,000, about 85 KB: a long scanned letter after OCR),
30 % of them drawn from ten clinical words and the rest from 3,000 filler words, so a
text repeats a few thousand distinct words. Three searches: a word in the text
(``patient``, about 450 occurrences per text), a rare one (``w2999``), and one that is
only in the title (the text is scanned in vain, then the title is excerpted). Each
variant excerpts the whole page ``--rounds`` times, alternating which goes first;
medians of the per-page wall times (``time.perf_counter``) are reported, with the
ratio old / new. The new code must mark every hit for the common word.

    .venv/bin/python bench/snippets.py                  # 50 hits x 15,000 words, 5 rounds
    .venv/bin/python bench/snippets.py --rounds 1 --hits 5   # quick check
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Iterable, Sequence
from typing import Any

from common import machine_info, new_figure, save_figure, write_json
from medvault.search.snippets import _WORD as WORD
from medvault.search.snippets import SCAN_CHARS, Matcher, Segment, around, fold, snippet
from medvault.search.snippets import _stem as stem

NAME = "snippets"
VARIANTS = ("old", "new")
CLINICAL = (
    "patient",
    "blood",
    "pressure",
    "haemoglobin",
    "normal",
    "report",
    "stable",
    "reviewed",
    "clinic",
    "letter",
)
SEARCHES = {"in_text_common": "patient", "in_text_rare": "w2999", "title_only": "biopsy"}
MIN_PREFIX = 3


# --------------------------------------------------------------------------- the old way
# Copied from src/medvault/search/snippets.py before this change; only the assembly of
# the excerpt's segments is shortened (it touches the few matches in the window).
def _old_matches(stems: frozenset[str], word: str) -> bool:
    folded = fold(word)
    if stem(folded) in stems:
        return True
    return any(len(s) >= MIN_PREFIX and folded.startswith(s) for s in stems)


def _old_window(text: str, spans: Sequence[tuple[int, int]], width: int) -> tuple[int, int]:
    if not spans:
        return 0, min(len(text), width)
    best_start, best_count = spans[0][0], 0
    for index, (start, _) in enumerate(spans):
        count = sum(1 for s, _ in spans[index:] if s < start + width * 3 // 4)
        if count > best_count:
            best_start, best_count = start, count
    # Cutting the stretch at spaces is unchanged, so the current code does it.
    return around(text, best_start, width)


def _old_excerpt(text: str, stems: frozenset[str], width: int = 220) -> list[Segment]:
    spans = [(m.start(), m.end()) for m in WORD.finditer(text) if _old_matches(stems, m.group())]
    begin, end = _old_window(text, spans, width)
    marked = [Segment(text[a:b], True) for a, b in spans if begin <= a and b <= end]
    return marked or [Segment(text[begin:end], False)]


def old_snippet(sources: Sequence[str | None], words: Iterable[str]) -> list[Segment]:
    stems = frozenset(stem(fold(w)) for w in words if w)
    present = [s for s in sources if s and s.strip()]
    for source in present:
        if any(_old_matches(stems, m.group()) for m in WORD.finditer(source)):
            return _old_excerpt(source, stems)
    return _old_excerpt(present[0], stems) if present else []


# --------------------------------------------------------------------------- the bench
def make_texts(hits: int, words: int, rng: random.Random) -> list[str]:
    texts = []
    for _ in range(hits):
        drawn = (
            rng.choice(CLINICAL) if rng.random() < 0.3 else f"w{rng.randrange(3000)}"
            for _ in range(words)
        )
        texts.append(" ".join(drawn))
    return texts


def excerpt_page(variant: str, texts: list[str], word: str) -> tuple[float, int]:
    """Seconds to excerpt the whole page, and how many hits got a marked match."""
    started = time.perf_counter()
    marked = 0
    if variant == "old":
        for body in texts:
            segments = old_snippet([body, None, "Biopsy letter"], [word])
            marked += any(s.match for s in segments)
    else:
        matcher = Matcher.for_words([word])
        for body in texts:
            segments = snippet([body, None, "Biopsy letter"], matcher)
            marked += any(s.match for s in segments)
    return time.perf_counter() - started, marked


def plot(results: dict[str, dict[str, list[float]]]) -> Any:
    fig, ax = new_figure(1, width=7.0, height=4.0)
    names = list(results)
    for offset, variant in enumerate(VARIANTS):
        medians = [statistics.median(results[n][variant]) * 1000 for n in names]
        positions = [i + (offset - 0.5) * 0.35 for i in range(len(names))]
        bars = ax.bar(positions, medians, width=0.35, label=variant)
        ax.bar_label(bars, fmt="%.0f", fontsize=8)
    ax.set_xticks(range(len(names)), [n.replace("_", " ") for n in names])
    ax.set_yscale("log")
    ax.set_ylabel("ms per page of hits (median, log scale)")
    ax.set_title("Excerpting a page of long extracted texts")
    ax.legend()
    return save_figure(fig, NAME)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hits", type=int, default=50)
    parser.add_argument("--words", type=int, default=15_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    texts = make_texts(args.hits, args.words, random.Random(11))
    for variant in VARIANTS:  # warm-up
        excerpt_page(variant, texts[:2], "patient")
    results: dict[str, dict[str, list[float]]] = {n: {v: [] for v in VARIANTS} for n in SEARCHES}
    marked: dict[str, dict[str, int]] = {n: {} for n in SEARCHES}
    for round_number in range(args.rounds):
        order = VARIANTS if round_number % 2 == 0 else VARIANTS[::-1]
        for name, word in SEARCHES.items():
            for variant in order:
                seconds, hits_marked = excerpt_page(variant, texts, word)
                results[name][variant].append(seconds)
                marked[name][variant] = hits_marked
    # A rare word may lie past SCAN_CHARS in every text; the common one may not.
    if marked["in_text_common"]["new"] != args.hits:
        raise RuntimeError("in_text_common: the new code left a hit unmarked")

    summary = {
        name: {
            "old_ms": round(statistics.median(by["old"]) * 1000, 2),
            "new_ms": round(statistics.median(by["new"]) * 1000, 2),
            "old_over_new": round(statistics.median(by["old"]) / statistics.median(by["new"]), 1),
            "hits_marked": marked[name],
        }
        for name, by in results.items()
    }
    result = {
        "benchmark": NAME,
        "machine": machine_info(),
        "config": {
            "hits": args.hits,
            "words_per_text": args.words,
            "characters_per_text": len(texts[0]),
            "scan_chars": SCAN_CHARS,
            "rounds": args.rounds,
            "searches": SEARCHES,
        },
        "per_page": summary,
        "seconds": {
            n: {v: [round(x, 4) for x in xs] for v, xs in by.items()} for n, by in results.items()
        },
    }
    json_path = write_json(NAME, result)
    png_path = plot(results)
    print(f"{args.hits} hits x {len(texts[0]):,} characters, median of {args.rounds} rounds:")
    for name, row in summary.items():
        print(f"  {name:<15} old {row['old_ms']:9.1f} ms   new {row['new_ms']:7.1f} ms   "
              f"x{row['old_over_new']}   marked {row['hits_marked']}")  # fmt: skip
    print(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
