"""Keyset listing: newest first, filters, and pages that stay put under inserts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from tests.support.factories import create_patient, pdf_bytes, upload_raw


def upload_many(
    client: TestClient, patient: str, count: int, document_type: str = "11502-2"
) -> list[str]:
    ids = []
    for _ in range(count):
        response = upload_raw(client, patient, pdf_bytes(600), document_type=document_type)
        assert response.status_code == 201
        ids.append(response.json()["id"])
    return ids


def walk(client: TestClient, **params: object) -> list[str]:
    seen: list[str] = []
    cursor = None
    while True:
        query = dict(params)
        if cursor:
            query["cursor"] = cursor
        page = client.get("/api/v1/documents", params=query).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen


def test_pages_are_newest_first_and_complete(client: TestClient) -> None:
    patient = create_patient(client)
    ids = upload_many(client, patient, 12)
    assert walk(client, limit=5) == list(reversed(ids))
    first = client.get("/api/v1/documents", params={"limit": 5}).json()
    assert len(first["items"]) == 5 and first["next_cursor"]
    assert client.get("/api/v1/documents", params={"limit": 12}).json()["next_cursor"] is None


def test_inserts_between_pages_do_not_shift_or_repeat(client: TestClient) -> None:
    patient = create_patient(client)
    older = list(reversed(upload_many(client, patient, 6)))
    page1 = client.get("/api/v1/documents", params={"limit": 3}).json()
    upload_many(client, patient, 4)  # arrive while the client is paging
    page2 = client.get(
        "/api/v1/documents", params={"limit": 3, "cursor": page1["next_cursor"]}
    ).json()
    assert [i["id"] for i in page1["items"]] == older[:3]
    assert [i["id"] for i in page2["items"]] == older[3:]


def test_filters(client: TestClient) -> None:
    alice, bob = create_patient(client), create_patient(client)
    labs = upload_many(client, alice, 3, "11502-2")
    letters = upload_many(client, alice, 2, "11488-4")
    bobs = upload_many(client, bob, 2)
    assert set(walk(client, patient_id=alice)) == set(labs + letters)
    assert set(walk(client, patient_id=bob)) == set(bobs)
    assert set(walk(client, document_type="11488-4")) == set(letters)
    assert set(walk(client, patient_id=alice, document_type="11502-2")) == set(labs)

    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert walk(client, created_after=future) == []
    assert len(walk(client, created_before=future)) == 7
    middle = client.get(f"/api/v1/documents/{letters[0]}").json()["created_at"]
    assert set(walk(client, created_after=middle)) == set(letters + bobs)


def test_deleted_documents_are_listed_only_on_request(client: TestClient) -> None:
    patient = create_patient(client)
    keep, gone = upload_many(client, patient, 2)
    client.delete(f"/api/v1/documents/{gone}", params={"reason": "duplicate scan"})
    assert walk(client) == [keep]
    assert walk(client, status="deleted") == [gone]
    assert set(walk(client, status="all")) == {keep, gone}


def test_listing_shows_the_current_version(client: TestClient) -> None:
    patient = create_patient(client)
    (doc,) = upload_many(client, patient, 1)
    client.post(
        f"/api/v1/documents/{doc}/versions",
        params={"filename": "v2.pdf"},
        content=pdf_bytes(700),
        headers={"content-type": "application/pdf"},
    )
    item = client.get("/api/v1/documents").json()["items"][0]
    assert item["version"] == 2 and item["filename"] == "v2.pdf"


def test_every_sort_pages_completely_in_order(client: TestClient) -> None:
    patient = create_patient(client)
    titles = ["delta", "Alpha", "charlie", "bravo", "echo", "alpha"]
    made = {}
    for number, title in enumerate(titles):
        response = upload_raw(client, patient, pdf_bytes(500 + 100 * number), title=title)
        made[response.json()["id"]] = (title.lower(), 500 + 100 * number)
    expectations = {
        "title": sorted(made, key=lambda i: (made[i][0], i)),
        "title-desc": sorted(made, key=lambda i: (made[i][0], i), reverse=True),
        "smallest": sorted(made, key=lambda i: made[i][1]),
        "largest": sorted(made, key=lambda i: made[i][1], reverse=True),
        "oldest": list(made),
        "newest": list(reversed(made)),
    }
    for sort, expected in expectations.items():
        assert walk(client, sort=sort, limit=4) == expected, sort


def test_a_cursor_only_works_with_its_own_sort(client: TestClient) -> None:
    patient = create_patient(client)
    upload_many(client, patient, 3)
    page = client.get("/api/v1/documents", params={"limit": 1, "sort": "title"}).json()
    replay = client.get(
        "/api/v1/documents", params={"limit": 1, "sort": "largest", "cursor": page["next_cursor"]}
    )
    assert replay.status_code == 400
    assert replay.json()["type"].endswith(":invalid-cursor")


def test_q_searches_words_in_title_or_description(client: TestClient) -> None:
    """`q` is a full-text search now (tests/search/ has the rest): words, not substrings."""
    patient = create_patient(client)
    ids = [
        upload_raw(client, patient, pdf_bytes(), title=title, description=description).json()["id"]
        for title, description in [
            ("Full Blood Count", "routine"),
            ("Discharge letter", "after 100% recovery of the blood pressure"),
            ("Chest X-ray", "no findings"),
            ("Lipid_panel", "fasting"),
        ]
    ]
    assert set(walk(client, q="BLOOD")) == {ids[0], ids[1]}
    assert walk(client, q="100%") == [ids[1]]
    # % and _ are separators, never wildcards; punctuation alone is nothing to find.
    assert client.get("/api/v1/documents", params={"q": "%"}).status_code == 400
    assert walk(client, q="e_letter") == []
    assert walk(client, q="lipid_") == [ids[3]]
