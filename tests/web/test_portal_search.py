"""The portal's search box: full-text, posted (never in a URL), scoped by the policy,
with <mark>ed snippets; a foreign patient's document never shows, nor its words."""

from __future__ import annotations

import pytest

from tests.search.support import store_text
from tests.support.portal import post_form
from tests.web.portal_world import Practice


@pytest.fixture
def texts(practice: Practice) -> None:
    """The documents' extracted text, sealed in the store and indexed (as the text job)."""
    store_text(practice.runtime, practice.own_doc, "Haemoglobin 135 g/L, stable.")
    store_text(practice.runtime, practice.foreign_doc, "Chest X-ray: Haemoglobin unrelated.")


@pytest.mark.parametrize("role", ["clinician", "patient"])
def test_own_content_is_found_and_foreign_never_shows(
    practice: Practice, texts: None, role: str
) -> None:
    with practice.browser(role) as browser:
        found = post_form(browser, "/documents", {"q": "haemoglobin"})
        assert found.status_code == 200
        # Found by its extracted text, decrypted for the snippet, highlighted.
        assert practice.own_doc in found.text
        assert "<mark>Haemoglobin</mark>" in found.text
        assert practice.foreign_doc not in found.text and "unrelated" not in found.text
        both = post_form(browser, "/documents", {"q": "chest or scan or report"})
        assert practice.own_doc in both.text
        # The foreign text's words ("X-ray" alone is also in the type "Scan or X-ray
        # report" that patients can filter by).
        for leak in (practice.foreign_doc, "Foreign scan", "Chest", "Chest X-ray"):
            assert leak not in both.text


def test_admin_searches_metadata_only(practice: Practice, texts: None) -> None:
    with practice.browser("admin") as browser:
        content = post_form(browser, "/documents", {"q": "haemoglobin"})
        assert practice.own_doc not in content.text
        titles = post_form(browser, "/documents", {"q": "report or scan"})
        assert practice.own_doc in titles.text and practice.foreign_doc in titles.text
        assert "<mark>Haemoglobin</mark>" not in titles.text


def test_nothing_to_find_is_explained(practice: Practice) -> None:
    with practice.browser("clinician") as browser:
        page = post_form(browser, "/documents", {"q": "!!!"})
        assert page.status_code == 422
        assert "The search text" in page.text


def test_auditor_cannot_search(practice: Practice) -> None:
    with practice.browser("auditor") as browser:
        page = post_form(browser, "/documents", {"q": "report"})
        assert page.status_code == 403
        assert practice.own_doc not in page.text and practice.foreign_doc not in page.text


def test_a_search_past_the_rank_window_says_so(
    practice: Practice, monkeypatch: pytest.MonkeyPatch
) -> None:
    with practice.browser("admin") as browser:
        wide = post_form(browser, "/documents", {"q": "report or scan"})
        assert "data-window-notice" not in wide.text
        assert practice.own_doc in wide.text and practice.foreign_doc in wide.text
        monkeypatch.setattr(practice.runtime.settings, "search_rank_window", 1)
        narrow = post_form(browser, "/documents", {"q": "report or scan"})
        assert narrow.status_code == 200
        assert "data-window-notice" in narrow.text
        assert "the best of the newest 1 matches" in narrow.text
        assert (practice.own_doc in narrow.text) != (practice.foreign_doc in narrow.text)
