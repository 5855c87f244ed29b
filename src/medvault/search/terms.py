"""What a user typed into a search box, taken apart into words, safely.

Both engines get their query from this one parse, never from the raw string, so they
agree on what was asked and no input can reach FTS5's query syntax (``"``, ``*``,
``NEAR(``, ``:``, ``^``, column filters) or produce a database error:

* words are runs of letters and digits (what FTS5's unicode61 tokenizer and
  PostgreSQL's parser both keep); everything else separates them;
* ``"several words"`` is a phrase, and so is a chunk that punctuation splits into
  several words (``x-ray`` is the phrase ``x ray``);
* ``-word`` (or ``-"a phrase"``) excludes; ``or`` between words offers alternatives;
  the rest must all match. This is the subset of PostgreSQL's ``websearch_to_tsquery``
  syntax that FTS5 can express too;
* a word typed on its own, of at least :data:`MIN_PREFIX` letters, also finds the
  words it begins (``haem`` finds ``haemoglobin``), as the portal's old substring
  search did for titles; quoting it (``"haem"``) asks for the word alone. Both
  engines stem the prefix as they stem words (``reports`` -> ``report``).

A search left with no word to look for (``!!!``, ``-alone``) is refused with a 400
``invalid-search-text`` rather than silently listing everything.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from dataclasses import dataclass

from medvault.kit.i18n import N_, msg
from medvault.kit.problems import BadRequest

MAX_SEARCH_CHARS = 200
# Words beyond this are ignored: a longer query is a paste, not a search.
MAX_WORDS = 32
_WORD = re.compile(r"[^\W_]+")
# Shorter lone words match only whole: "a" or "of" as prefixes would match nearly
# every document, and cost the index a scan of every word they begin.
MIN_PREFIX = 3


class InvalidSearchText(BadRequest):
    slug, title = "invalid-search-text", N_("The search text cannot be searched")


@dataclass(frozen=True)
class Clause:
    """One word, or a phrase of several; ``negated`` excludes documents that have it."""

    words: tuple[str, ...]
    negated: bool = False
    # A lone, unquoted, positive word: also matches the words it begins.
    prefix: bool = False


@dataclass(frozen=True)
class SearchText:
    """An OR of groups; each group is an AND of its clauses (at least one not negated)."""

    groups: tuple[tuple[Clause, ...], ...]

    @property
    def words(self) -> list[str]:
        """The words to find (negated ones left out): what a snippet highlights."""
        return [w for group in self.groups for c in group if not c.negated for w in c.words]

    def canonical(self) -> str:
        """The query in websearch syntax (what the audit's digest is taken of), built
        only from the parsed words."""
        return " or ".join(" ".join(_websearch(c) for c in group) for group in self.groups)

    def tsquery(self) -> str:
        """The query in PostgreSQL's ``to_tsquery`` syntax (which, unlike websearch's,
        has prefixes), built only from the parsed words: each is letters and digits,
        so quoting it in ``'...'`` needs no escaping."""
        return " | ".join(
            "(" + " & ".join(_tsquery(c) for c in group) + ")" for group in self.groups
        )

    def fts5(self, column: str | None = None) -> str:
        """An FTS5 MATCH expression: every word quoted, operators written by us.

        ``column`` restricts every phrase to one column (FTS5's ``{col} : (...)``).
        """
        expression = " OR ".join(f"({_fts5_group(group)})" for group in self.groups)
        return f"{{{column}}} : ({expression})" if column else expression


def _websearch(clause: Clause) -> str:
    # A lone word is quoted when it was asked for whole, so "haem" and haem differ.
    whole = len(clause.words) > 1 or (not clause.prefix and len(clause.words[0]) >= MIN_PREFIX)
    text = f'"{" ".join(clause.words)}"' if whole else clause.words[0]
    return f"-{text}" if clause.negated else text


def _tsquery(clause: Clause) -> str:
    text = " <-> ".join(f"'{word}'" for word in clause.words)
    text = f"{text}:*" if clause.prefix else text
    return f"!({text})" if clause.negated else text


def _fts5_phrase(clause: Clause) -> str:
    # Words hold letters and digits only, so they need no escaping inside the quotes.
    return '"' + " ".join(clause.words) + '"' + ("*" if clause.prefix else "")


def _fts5_group(group: tuple[Clause, ...]) -> str:
    positive = " AND ".join(_fts5_phrase(c) for c in group if not c.negated)
    negative = "".join(f" NOT {_fts5_phrase(c)}" for c in group if c.negated)
    return f"({positive}){negative}" if negative else positive


def without_diacritics(text: str) -> str:
    """``Café`` -> ``Cafe``: what FTS5's ``remove_diacritics`` does, done in Python for
    PostgreSQL, whose english configuration keeps accents (``unaccent`` is an
    extension a managed database may not offer)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def words_only(text: str) -> str:
    """The words of ``text`` separated by single spaces, diacritics removed.

    What PostgreSQL is given to index: its parser would otherwise keep ``fbc.pdf``,
    ``a@b.org`` or ``1.5`` as single tokens where FTS5's unicode61 splits them, and
    the two engines would find different documents for the same words.
    """
    return " ".join(_WORD.findall(without_diacritics(text)))


def normalise(text: str) -> str:
    """Case-folded, compatibility-normalised, without diacritics: the form words are
    compared and digested in."""
    return without_diacritics(unicodedata.normalize("NFKC", text).casefold())


def _chunks(text: str) -> list[tuple[str, bool, bool]]:
    """(chunk, quoted, negated) in order; an unclosed quote runs to the end."""
    found: list[tuple[str, bool, bool]] = []
    position = 0
    while position < len(text):
        char = text[position]
        if char.isspace():
            position += 1
            continue
        negated = char == "-" and position + 1 < len(text) and not text[position + 1].isspace()
        start = position + 1 if negated else position
        if start < len(text) and text[start] == '"':
            end = text.find('"', start + 1)
            end = len(text) if end == -1 else end
            found.append((text[start + 1 : end], True, negated))
            position = end + 1
            continue
        end = start
        while end < len(text) and not text[end].isspace() and text[end] != '"':
            end += 1
        found.append((text[start:end], False, negated))
        position = end
    return found


def parse(raw: str) -> SearchText:
    """Take ``raw`` apart; raises :class:`InvalidSearchText` if nothing is left to find."""
    if len(raw) > MAX_SEARCH_CHARS:
        raise InvalidSearchText(
            msg("Search for at most {limit} characters.", limit=MAX_SEARCH_CHARS)
        )
    groups: list[list[Clause]] = [[]]
    budget = MAX_WORDS
    for chunk, quoted, negated in _chunks(normalise(raw)):
        if not quoted and not negated and chunk == "or":
            groups.append([])
            continue
        words = tuple(_WORD.findall(chunk))[:budget]
        if not words:
            continue
        budget -= len(words)
        prefix = not quoted and not negated and len(words) == 1 and len(words[0]) >= MIN_PREFIX
        groups[-1].append(Clause(words, negated, prefix))
        if budget <= 0:
            break
    kept = tuple(tuple(g) for g in groups if any(not c.negated for c in g))
    if not kept:
        raise InvalidSearchText(
            N_(
                "Type at least one word to look for (letters or digits); a search cannot "
                "consist of exclusions or punctuation alone."
            )
        )
    return SearchText(kept)


def digest(key: bytes, search: SearchText) -> str:
    """HMAC-SHA256 of the parsed query under a key derived from the server secret.

    Lets an auditor see that two searches asked the same thing without the words being
    recoverable by anyone who lacks ``MEDVAULT_SECRET_KEY`` (a plain hash of a short
    query could be brute-forced from a dictionary).
    """
    derived = hmac.new(key, b"medvault search audit v1", hashlib.sha256).digest()
    return hmac.new(derived, search.canonical().encode("utf-8"), hashlib.sha256).hexdigest()[:32]
