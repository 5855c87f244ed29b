"""Full-text search over REST, on SQLite (FTS5) and PostgreSQL (tsvector): the same
documents for the same corpus, safe with any input, paged, scoped and never logged."""

from __future__ import annotations

import logging
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy import text as sql

from medvault.audit.models import AuditEvent
from medvault.runtime import Runtime
from medvault.search.query import plan_for_the_words
from tests.search.support import search, store_text
from tests.support.factories import create_patient, pdf_bytes, upload_raw

CORPUS = {
    "echo": ("Echocardiogram report", "Left ventricle normal", "echo-2024.pdf", ""),
    "bloods": ("Full blood count", "Routine bloods", "fbc.pdf", "Haemoglobin was reported low."),
    "letter": ("Discharge letter", "Ward 7", "letter.pdf", "Blood pressure reports attached."),
    "xray": ("Chest X-ray", "No findings", "cxr.pdf", "The radiologist reporting today."),
    "cafe": ("Clinic note", "Patient drinks café au lait", "note.pdf", ""),
}


@pytest.fixture
def corpus(client: TestClient, runtime: Runtime) -> dict[str, str]:
    patient = create_patient(client)
    ids = {}
    for key, (title, description, filename, text) in CORPUS.items():
        response = upload_raw(
            client, patient, pdf_bytes(), title=title, description=description, filename=filename
        )
        assert response.status_code == 201, response.text
        ids[key] = response.json()["id"]
        if text:
            store_text(runtime, ids[key], text)
    return ids


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        # Stemming: every form of "report" in title, description or content.
        ("reports", {"echo", "bloods", "letter", "xray"}),
        ("report", {"echo", "bloods", "letter", "xray"}),
        # Several words: all of them, in any field.
        ("blood reports", {"bloods", "letter"}),
        ('"blood pressure"', {"letter"}),
        ('"pressure blood"', set()),
        ("blood -pressure", {"bloods"}),
        ("haemoglobin or radiologist", {"bloods", "xray"}),
        # Diacritics and case do not matter.
        ("CAFE", {"cafe"}),
        ("café", {"cafe"}),
        # File names are indexed.
        ("fbc", {"bloods"}),
        ("nothingmatchesthis", set()),
        # A lone word also finds the words it begins, in any field; quoted, it is whole.
        ("haem", {"bloods"}),
        ('"haem"', set()),
        ("echocardio", {"echo"}),
        ("radiolog", {"xray"}),
        ("ventr -pressure", {"echo"}),
        # Under three letters a word is only ever whole ("no" is not "normal").
        ("ve", set()),
    ],
)
def test_the_same_documents_are_found_on_both_backends(
    client: TestClient, corpus: dict[str, str], q: str, expected: set[str]
) -> None:
    found = search(client, q)
    assert len(found) == len(set(found))
    assert set(found) == {corpus[key] for key in expected}


def test_results_are_ranked_and_carry_highlighted_snippets(
    client: TestClient, corpus: dict[str, str]
) -> None:
    page = client.get("/api/v1/documents", params={"q": "blood"}).json()
    assert page["full_text"] is True
    items = {item["id"]: item for item in page["items"]}
    assert set(items) == {corpus["bloods"], corpus["letter"]}
    # A title match outranks a match in the text only.
    assert page["items"][0]["id"] == corpus["bloods"]
    assert all(isinstance(item["rank"], float) for item in page["items"])
    letter = items[corpus["letter"]]["snippet"]
    assert {"text": "Blood", "match": True} in letter
    assert "".join(s["text"] for s in letter) == "Blood pressure reports attached."
    # No text: the excerpt comes from the description or title.
    echo = client.get("/api/v1/documents", params={"q": "ventricle"}).json()["items"][0]
    assert {"text": "ventricle", "match": True} in echo["snippet"]


@pytest.mark.parametrize(
    "q",
    [
        '"',
        '"unclosed phrase',
        "blood*",
        "NEAR(blood report)",
        "-",
        "title:blood",
        "{title}: x",
        "blood AND OR NOT",
        "a^b",
        "'; DROP TABLE documents; --",
        "\\",
        "(((",
        "café:*",
        "x" * 200,
    ],
)
def test_any_input_is_a_clean_answer(client: TestClient, corpus: dict[str, str], q: str) -> None:
    response = client.get("/api/v1/documents", params={"q": q})
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert response.json()["type"] == "urn:medvault:problem:invalid-search-text"


@pytest.mark.parametrize("q", ["!!!", "-blood", '""', "- -"])
def test_nothing_to_find_is_a_400(client: TestClient, corpus: dict[str, str], q: str) -> None:
    response = client.get("/api/v1/documents", params={"q": q})
    assert response.status_code == 400
    assert response.json()["type"] == "urn:medvault:problem:invalid-search-text"


def test_keyset_pages_return_each_hit_once(client: TestClient, runtime: Runtime) -> None:
    patient = create_patient(client)
    ids = set()
    for n in range(13):
        # Three rank classes (title, description, content), many ties within each.
        where = n % 3
        title = "Pathology result" if where == 0 else f"Note {n}"
        description = "pathology" if where == 1 else "routine"
        doc = upload_raw(client, patient, pdf_bytes(), title=title, description=description)
        ids.add(doc.json()["id"])
        if where == 2:
            store_text(runtime, doc.json()["id"], "pathology sample received")
    found = search(client, "pathology", limit=2)
    assert len(found) == 13 and set(found) == ids
    ranks = []
    cursor = None
    while True:
        params = {"q": "pathology", "limit": 4} | ({"cursor": cursor} if cursor else {})
        page = client.get("/api/v1/documents", params=params).json()
        ranks += [item["rank"] for item in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert ranks == sorted(ranks, reverse=True)


def test_search_combines_with_the_filters(client: TestClient, corpus: dict[str, str]) -> None:
    other = create_patient(client)
    theirs = upload_raw(client, other, pdf_bytes(), title="Blood results").json()["id"]
    assert corpus["bloods"] in search(client, "blood")
    assert search(client, "blood", patient_id=other) == [theirs]
    assert search(client, "blood", document_type="18842-5") == []
    client.delete(f"/api/v1/documents/{corpus['bloods']}", params={"reason": "duplicate"})
    assert corpus["bloods"] not in search(client, "blood")
    assert search(client, "blood", status="deleted") == [corpus["bloods"]]


def test_bad_cursors_and_sorts_are_400(client: TestClient, corpus: dict[str, str]) -> None:
    for cursor in ("garbage", "eyJzIjoibmV3ZXN0In0"):
        response = client.get("/api/v1/documents", params={"q": "blood", "cursor": cursor})
        assert response.status_code == 400
        assert response.json()["type"].endswith(":invalid-cursor")
    listing = client.get("/api/v1/documents", params={"limit": 1}).json()
    replay = client.get(
        "/api/v1/documents", params={"q": "blood", "cursor": listing["next_cursor"]}
    )
    assert replay.status_code == 400
    # With q the results are ranked whatever sort says; without q, relevance is newest.
    ranked = client.get("/api/v1/documents", params={"q": "blood", "sort": "title"}).json()
    assert [i["id"] for i in ranked["items"]] == search(client, "blood")
    newest = client.get("/api/v1/documents", params={"sort": "relevance"}).json()
    assert newest["items"][0]["id"] == corpus["cafe"]


def test_metadata_changes_are_indexed_in_their_transaction(
    client: TestClient, runtime: Runtime
) -> None:
    patient = create_patient(client)
    first = upload_raw(client, patient, pdf_bytes(), title="Referral").json()["id"]
    assert search(client, "referral") == [first]
    upload = client.post(
        f"/api/v1/documents/{first}/versions",
        params={"filename": "spirometry.pdf"},
        content=pdf_bytes(),
        headers={"content-type": "application/pdf"},
    )
    assert upload.status_code == 201, upload.text
    assert search(client, "spirometry") == [first]


def test_search_terms_never_reach_audit_or_logs(
    client: TestClient, runtime: Runtime, corpus: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    marker = f"zq{uuid.uuid4().hex[:10]}x"
    store_text(runtime, corpus["echo"], f"The {marker} finding was discussed.")
    caplog.set_level(logging.DEBUG)
    found = client.get("/api/v1/documents", params={"q": f"{marker} finding"})
    assert found.status_code == 200 and len(found.json()["items"]) == 1
    again = client.get("/api/v1/documents", params={"q": f"{marker.upper()}   finding"})
    assert again.status_code == 200
    # The app's own records (the test client's httpx lines show the URL it sent).
    app_lines = [r.getMessage() for r in caplog.records if not r.name.startswith("httpx")]
    assert app_lines and not any(marker in line.lower() for line in app_lines)
    with runtime.clinical.read_session() as session:
        events = list(
            session.scalars(
                select(AuditEvent)
                .where(AuditEvent.action == "document.list")
                .order_by(AuditEvent.id)
            )
        )
    searches = [e for e in events if (e.details or {}).get("searched")]
    assert len(searches) == 2
    for event in events:
        assert marker not in repr(event.details).lower()
        assert "finding" not in repr(event.details).lower()
    first, second = searches
    assert first.details is not None and second.details is not None
    assert first.details["results"] == 1 and first.details["full_text"] is True
    # The same search, typed differently: the same digest, so an auditor can correlate.
    assert first.details["search_digest"] == second.details["search_digest"]


def test_a_search_ranks_the_newest_window_of_matches_and_says_so(
    client: TestClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    patient = create_patient(client)
    other = create_patient(client)
    # The oldest match is the best one (its title holds the word) ...
    best = upload_raw(client, other, pdf_bytes(), title="Pathology result").json()["id"]
    # ... then four newer ones that hold it only in their descriptions.
    newer = [
        upload_raw(client, patient, pdf_bytes(), title=f"Note {n}", description="pathology").json()[
            "id"
        ]
        for n in range(4)
    ]
    monkeypatch.setattr(runtime.settings, "search_rank_window", 3)

    page = client.get("/api/v1/documents", params={"q": "pathology"}).json()
    assert page["rank_window"] == 3
    assert page["older_matches_unranked"] is True
    assert set(search(client, "pathology")) == set(newer[-3:])
    # The window is taken after the filters, so narrowing brings older matches back.
    assert search(client, "pathology", patient_id=other) == [best]
    narrowed = client.get("/api/v1/documents", params={"q": "pathology result"}).json()
    assert [item["id"] for item in narrowed["items"]] == [best]
    assert narrowed["older_matches_unranked"] is False

    monkeypatch.setattr(runtime.settings, "search_rank_window", 5)
    whole = client.get("/api/v1/documents", params={"q": "pathology"}).json()
    assert whole["older_matches_unranked"] is False
    # Within the window the rank decides, not the age: the title match comes first.
    assert whole["items"][0]["id"] == best
    assert {item["id"] for item in whole["items"]} == {best, *newer}


def test_a_search_plans_for_its_words_only_in_its_own_transaction(
    client: TestClient, runtime: Runtime, corpus: dict[str, str]
) -> None:
    planner = ("plan_cache_mode", "random_page_cost", "max_parallel_workers_per_gather")
    with runtime.clinical.session() as session:
        if runtime.clinical.is_sqlite:
            plan_for_the_words(session)  # nothing to set: SQLite plans every statement
            assert session.execute(sql("SELECT 1")).scalar() == 1
            return
        before = [session.execute(sql(f"SHOW {name}")).scalar() for name in planner]
        plan_for_the_words(session)
        during = [session.execute(sql(f"SHOW {name}")).scalar() for name in planner]
        session.commit()
        after = [session.execute(sql(f"SHOW {name}")).scalar() for name in planner]
    assert during == ["force_custom_plan", "1.1", "0"]
    assert after == before != during
    # And a search through the API still finds what it should under those settings.
    assert corpus["bloods"] in search(client, "haemoglobin")
