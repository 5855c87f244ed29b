"""Parsing search input and excerpting matches: pure functions, no database."""

from __future__ import annotations

import pytest

from medvault.search.snippets import Segment, snippet
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
