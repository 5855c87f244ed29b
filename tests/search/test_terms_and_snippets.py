"""Parsing search input and excerpting matches: pure functions, no database."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from medvault.search import snippets
from medvault.search.snippets import SCAN_CHARS, Matcher, Segment, snippet
from medvault.search.terms import InvalidSearchText, digest, parse


@pytest.mark.parametrize(
    ("raw", "fts5", "tsquery", "canonical"),
    [
        # A lone word of three letters or more also finds the words it begins.
        ("Blood", '"blood"*', "('blood':*)", "blood"),
        (
            "blood  pressure",
            '"blood"* AND "pressure"*',
            "('blood':* & 'pressure':*)",
            "blood pressure",
        ),
        ('"blood pressure"', '"blood pressure"', "('blood' <-> 'pressure')", '"blood pressure"'),
        # Quoted, a word is asked for whole; shorter than three letters, always whole.
        ('"haem"', '"haem"', "('haem')", '"haem"'),
        ("hb a1c", '"hb" AND "a1c"*', "('hb' & 'a1c':*)", "hb a1c"),
        ("x-ray chest", '"x ray" AND "chest"*', "('x' <-> 'ray' & 'chest':*)", '"x ray" chest'),
        # Exclusions are exact: "-sugar" must not also exclude "sugary".
        ("blood -sugar", '("blood"*) NOT "sugar"', "('blood':* & !('sugar'))", 'blood -"sugar"'),
        ("heart or lung", '("heart"*) OR ("lung"*)', "('heart':*) | ('lung':*)", "heart or lung"),
        ('NEAR("a" b)*', '"near"* AND "a" AND "b"', "('near':* & 'a' & 'b')", "near a b"),
        ("title:café", '"title cafe"', "('title' <-> 'cafe')", '"title cafe"'),
        ("it's", '"it s"', "('it' <-> 's')", '"it s"'),
    ],
)
def test_queries_are_built_from_words_only(
    raw: str, fts5: str, tsquery: str, canonical: str
) -> None:
    parsed = parse(raw)
    assert parsed.fts5().replace("(", "").replace(")", "") == fts5.replace("(", "").replace(")", "")
    assert parsed.tsquery() == tsquery
    assert parsed.canonical() == canonical


@pytest.mark.parametrize("raw", ["", "!!!", '""', "-alone", "- -", "or", "x" * 201])
def test_nothing_to_find(raw: str) -> None:
    with pytest.raises(InvalidSearchText):
        parse(raw)


def test_column_filter_wraps_the_whole_expression() -> None:
    assert parse("a or b").fts5("title") == '{title} : (("a") OR ("b"))'


def test_digest_is_keyed_and_normalised() -> None:
    key = b"k" * 32
    assert digest(key, parse("Blood  Pressure")) == digest(key, parse("blood pressure"))
    assert digest(key, parse("blood")) != digest(b"x" * 32, parse("blood"))
    assert "blood" not in digest(key, parse("blood"))
    # A word asked for whole is another search than the word and the words it begins.
    assert digest(key, parse('"blood"')) != digest(key, parse("blood"))


def test_snippet_marks_stemmed_forms_case_and_accents() -> None:
    text = "The REPORTS were reported; the Café reporting team."
    segments = snippet([text], ["report", "cafe"])
    marked = [s.text for s in segments if s.match]
    assert marked == ["REPORTS", "reported", "Café", "reporting"]
    assert "".join(s.text for s in segments) == text


def test_snippet_windows_long_text_and_falls_back_to_metadata() -> None:
    long = "filler " * 200 + "the biopsy result " + "filler " * 200
    segments = snippet([long], ["biopsy"])
    assert Segment("biopsy", True) in segments
    assert segments[0].text == "…" and segments[-1].text == "…"
    assert sum(len(s.text) for s in segments) < 300
    assert snippet([None, "", "Biopsy letter"], ["biopsy"])[0] == Segment("Biopsy", True)
    assert snippet([None, "Plain title"], ["absent"]) == [Segment("Plain title", False)]


def _densest_start_by_counting(spans: list[tuple[int, int]], width: int) -> int:
    """The window's start as first written: one count over the later spans per span."""
    best_start, best_count = spans[0][0], 0
    for index, (start, _) in enumerate(spans):
        count = sum(1 for s, _ in spans[index:] if s < start + width * 3 // 4)
        if count > best_count:
            best_start, best_count = start, count
    return best_start


@given(
    starts=st.lists(st.integers(min_value=0, max_value=5000), min_size=1, max_size=200),
    width=st.integers(min_value=10, max_value=400),
)
def test_the_one_pass_window_picks_what_counting_picked(starts: list[int], width: int) -> None:
    spans = [(start, start + 3) for start in sorted(set(starts))]
    assert snippets.densest_start(spans, width) == _densest_start_by_counting(spans, width)


def test_a_matcher_decides_each_word_once_and_the_same_way() -> None:
    matcher = Matcher.for_words(["report"])
    first = [matcher(word) for word in ("Reports", "reported", "REPORTS", "other")]
    assert first == [True, True, True, False]
    assert [matcher(word) for word in ("Reports", "reported", "REPORTS", "other")] == first


def test_only_the_start_of_a_long_text_is_scanned_for_the_excerpt() -> None:
    early = "biopsy " + "filler " * (SCAN_CHARS // 7)
    assert Segment("biopsy", True) in snippet([early], ["biopsy"])
    late = "filler " * (SCAN_CHARS // 7 + 10) + "biopsy"
    # Found by the index, but past the scanned part: the metadata's excerpt is shown.
    assert snippet([late, "Biopsy letter"], ["biopsy"])[0] == Segment("Biopsy", True)
    unmarked = snippet([late], ["biopsy"])
    assert not any(segment.match for segment in unmarked)
    assert unmarked[0].text.startswith("filler")
