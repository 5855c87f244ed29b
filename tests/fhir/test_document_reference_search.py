"""DocumentReference search: parameters, keyset paging both ways, totals and strictness."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from medvault.documents.models import DocumentVersion
from medvault.runtime import Runtime
from tests.fhir.support import entries, ids, link
from tests.support.factories import create_patient, pdf_bytes, upload_raw
from tests.support.inspect import audit_events


def set_dates(runtime: Runtime, dates: dict[str, datetime]) -> None:
    """Give each document's current version a known creation time."""
    with runtime.clinical.session() as session:
        for document_id, when in dates.items():
            session.execute(
                update(DocumentVersion)
                .where(DocumentVersion.document_id == uuid.UUID(document_id))
                .values(created_at=when)
            )
        session.commit()


@pytest.fixture
def dated(fhir: TestClient, runtime: Runtime) -> dict[str, str]:
    """Patient p with documents on known dates and types; patient q with one document."""
    p, q = create_patient(fhir), create_patient(fhir)
    docs = {
        "lab_2023": upload_raw(fhir, p, pdf_bytes(), document_type="11502-2").json()["id"],
        "note_2024_03": upload_raw(fhir, p, pdf_bytes(), document_type="11506-3").json()["id"],
        "lab_2024_06": upload_raw(fhir, p, pdf_bytes(), document_type="11502-2").json()["id"],
        "other_q": upload_raw(fhir, q, pdf_bytes(), document_type="18842-5").json()["id"],
    }
    set_dates(
        runtime,
        {
            docs["lab_2023"]: datetime(2023, 5, 1, 12, tzinfo=UTC),
            docs["note_2024_03"]: datetime(2024, 3, 15, 8, 30, tzinfo=UTC),
            docs["lab_2024_06"]: datetime(2024, 6, 30, 23, 59, 59, tzinfo=UTC),
            docs["other_q"]: datetime(2024, 1, 1, tzinfo=UTC),
        },
    )
    return {"p": p, "q": q, **docs}


def test_patient_and_subject_select_one_patients_documents(
    fhir: TestClient, dated: dict[str, str]
) -> None:
    by_patient = fhir.get("/fhir/DocumentReference", params={"patient": dated["p"]}).json()
    assert by_patient["total"] == 3
    # Newest first by default.
    assert ids(by_patient) == [dated["lab_2024_06"], dated["note_2024_03"], dated["lab_2023"]]
    for value in (f"Patient/{dated['q']}", f"http://testserver/fhir/Patient/{dated['q']}"):
        found = fhir.get("/fhir/DocumentReference", params={"subject": value}).json()
        assert ids(found) == [dated["other_q"]]
    both = fhir.get(
        "/fhir/DocumentReference", params={"patient": f"{dated['p']},{dated['q']}"}
    ).json()
    assert both["total"] == 4
    nobody = fhir.get("/fhir/DocumentReference", params={"patient": "Practitioner/1"}).json()
    assert nobody["total"] == 0 and "entry" not in nobody


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024", ["lab_2024_06", "note_2024_03"]),
        ("eq2024-03", ["note_2024_03"]),
        ("2024-03-15", ["note_2024_03"]),
        ("2024-03-15T08:30", ["note_2024_03"]),
        ("2024-03-15T08:30:00Z", ["note_2024_03"]),
        ("2024-03-15T10:30:00+02:00", ["note_2024_03"]),
        ("ge2024-03-15", ["lab_2024_06", "note_2024_03"]),
        ("gt2024-03-15", ["lab_2024_06"]),
        ("lt2024-03-15", ["lab_2023"]),
        ("le2024-03-15", ["note_2024_03", "lab_2023"]),
        ("sa2024-03", ["lab_2024_06"]),
        ("eb2024", ["lab_2023"]),
        ("ne2024-03", ["lab_2024_06", "lab_2023"]),
        ("lt2024-06-30T23:59:59Z", ["note_2024_03", "lab_2023"]),
        ("2023,2024-06", ["lab_2024_06", "lab_2023"]),
    ],
)
def test_date_prefixes_and_precision(
    fhir: TestClient, dated: dict[str, str], value: str, expected: list[str]
) -> None:
    found = fhir.get("/fhir/DocumentReference", params={"patient": dated["p"], "date": value})
    assert ids(found.json()) == [dated[name] for name in expected]


def test_two_date_parameters_make_a_range(fhir: TestClient, dated: dict[str, str]) -> None:
    found = fhir.get(
        "/fhir/DocumentReference",
        params=[("patient", dated["p"]), ("date", "ge2024-01-01"), ("date", "lt2024-06-01")],
    )
    assert ids(found.json()) == [dated["note_2024_03"]]


def test_type_category_status_and_id(fhir: TestClient, dated: dict[str, str]) -> None:
    def search(**params: str) -> list[str]:
        return ids(fhir.get("/fhir/DocumentReference", params=params).json())

    p = dated["p"]
    labs = [dated["lab_2024_06"], dated["lab_2023"]]
    assert search(patient=p, type="http://loinc.org|11502-2") == labs
    assert search(patient=p, type="11502-2") == labs
    assert search(patient=p, type="http://loinc.org|") == search(patient=p)
    assert search(patient=p, type="http://snomed.info/sct|11502-2") == []
    assert search(patient=p, category="laboratory") == labs
    assert search(patient=p, category="urn:medvault:document-category|clinical-note") == [
        dated["note_2024_03"]
    ]
    assert search(patient=p, status="current") == search(patient=p)
    assert search(patient=p, status="entered-in-error") == []
    assert search(_id=f"{dated['lab_2023']},{dated['other_q']}") == [
        dated["other_q"],
        dated["lab_2023"],
    ]
    assert search(_id="not-an-id") == []


def test_status_selects_superseded_and_deleted(fhir: TestClient) -> None:
    patient = create_patient(fhir)
    kept = upload_raw(fhir, patient, pdf_bytes()).json()["id"]
    fhir.post(
        f"/api/v1/documents/{kept}/versions",
        content=pdf_bytes(),
        headers={"content-type": "application/pdf"},
    )
    gone = upload_raw(fhir, patient, pdf_bytes()).json()["id"]
    fhir.delete(f"/api/v1/documents/{gone}", params={"reason": "duplicate scan"})

    def search(status: str) -> list[str]:
        bundle = fhir.get(
            "/fhir/DocumentReference", params={"patient": patient, "status": status}
        ).json()
        return ids(bundle)

    assert search("current") == [kept]
    assert search("superseded") == [f"{kept}.1"]
    assert search("entered-in-error") == [gone]
    everything = fhir.get("/fhir/DocumentReference", params={"patient": patient}).json()
    assert everything["total"] == 3  # FHIR: no status filter means every status


def test_paging_follows_keyset_links_both_ways(fhir: TestClient) -> None:
    patient = create_patient(fhir)
    made = [upload_raw(fhir, patient, pdf_bytes()).json()["id"] for _ in range(7)]
    first = fhir.get("/fhir/DocumentReference", params={"patient": patient, "_count": 3}).json()
    assert first["total"] == 7
    assert link(first, "previous") is None

    pages, bundle = [ids(first)], first
    while (next_url := link(bundle, "next")) is not None:
        bundle = fhir.get(next_url).json()
        assert bundle["total"] == 7
        pages.append(ids(bundle))
    assert [len(page) for page in pages] == [3, 3, 1]
    seen = [item for page in pages for item in page]
    assert sorted(seen) == sorted(made) and len(set(seen)) == 7

    # And back again from the last page, through the previous links.
    back = [ids(bundle)]
    while (prev_url := link(bundle, "previous")) is not None:
        bundle = fhir.get(prev_url).json()
        back.append(ids(bundle))
    assert back[::-1] == pages
    assert link(bundle, "first") == link(first, "self")


def test_new_documents_do_not_shift_the_pages(fhir: TestClient) -> None:
    patient = create_patient(fhir)
    made = [upload_raw(fhir, patient, pdf_bytes()).json()["id"] for _ in range(4)]
    first = fhir.get("/fhir/DocumentReference", params={"patient": patient, "_count": 2}).json()
    upload_raw(fhir, patient, pdf_bytes())  # newer than the cursor: never on a later page
    second = fhir.get(link(first, "next") or "").json()
    assert ids(first) + ids(second) == made[::-1]


def test_sort_ascending_and_count_zero(fhir: TestClient, dated: dict[str, str]) -> None:
    ascending = fhir.get(
        "/fhir/DocumentReference", params={"patient": dated["p"], "_sort": "date", "_count": 2}
    ).json()
    assert ids(ascending) == [dated["lab_2023"], dated["note_2024_03"]]
    after = fhir.get(link(ascending, "next") or "").json()
    assert ids(after) == [dated["lab_2024_06"]]
    assert "_sort=date" in (link(after, "self") or "")

    counted = fhir.get(
        "/fhir/DocumentReference", params={"patient": dated["p"], "_count": 0}
    ).json()
    assert counted["total"] == 3 and "entry" not in counted
    untotalled = fhir.get(
        "/fhir/DocumentReference", params={"patient": dated["p"], "_total": "none"}
    ).json()
    assert "total" not in untotalled and len(ids(untotalled)) == 3


def test_a_cursor_only_works_with_its_own_sort(fhir: TestClient, dated: dict[str, str]) -> None:
    page = fhir.get("/fhir/DocumentReference", params={"patient": dated["p"], "_count": 1}).json()
    cursor = (link(page, "next") or "").split("_cursor=")[1]
    replayed = fhir.get("/fhir/DocumentReference", params={"_sort": "date", "_cursor": cursor})
    assert replayed.status_code == 400
    assert replayed.json()["issue"][0]["details"]["coding"][0]["code"] == "invalid-cursor"
    garbage = fhir.get("/fhir/DocumentReference", params={"_cursor": "!!!"})
    assert garbage.status_code == 400


def test_unknown_parameters_are_reported_or_refused(
    fhir: TestClient, dated: dict[str, str]
) -> None:
    lenient = fhir.get(
        "/fhir/DocumentReference", params={"patient": dated["p"], "_include": "x", "foo": "1"}
    ).json()
    assert lenient["total"] == 3
    outcome = entries(lenient, mode="outcome")
    assert len(outcome) == 1
    assert "_include, foo" in outcome[0]["issue"][0]["diagnostics"]
    assert "foo" not in (link(lenient, "self") or "")

    strict = fhir.get(
        "/fhir/DocumentReference",
        params={"patient": dated["p"], "foo": "1"},
        headers={"Prefer": "handling=strict"},
    )
    assert strict.status_code == 400
    assert strict.json()["issue"][0]["details"]["coding"][0]["code"] == "fhir-invalid-search"


@pytest.mark.parametrize(
    "params",
    [
        {"date": "yesterday"},
        {"date": "2024-13-01"},
        {"date": "ap2024"},
        {"date:missing": "true"},
        {"type:text": "lab"},
        {"_sort": "title"},
        {"_count": "-1"},
        {"_total": "sometimes"},
    ],
)
def test_bad_search_values_are_400_and_change_nothing(
    fhir: TestClient, runtime: Runtime, params: dict[str, str]
) -> None:
    before = len(audit_events(runtime, "document.list"))
    response = fhir.get("/fhir/DocumentReference", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["severity"] == "error"
    # Problems say what is wrong, never what was sent.
    assert all(value not in response.text for value in params.values())
    assert len(audit_events(runtime, "document.list")) == before


def test_post_search_equals_get_search(fhir: TestClient, dated: dict[str, str]) -> None:
    got = fhir.get("/fhir/DocumentReference", params={"patient": dated["p"], "type": "11502-2"})
    posted = fhir.post(
        "/fhir/DocumentReference/_search",
        data={"patient": dated["p"], "type": "11502-2"},
    )
    assert posted.status_code == 200
    assert ids(posted.json()) == ids(got.json())
    wrong = fhir.post("/fhir/DocumentReference/_search", json={"patient": dated["p"]})
    assert wrong.status_code == 415


def test_search_is_audited_like_the_rest_listing(
    fhir: TestClient, runtime: Runtime, dated: dict[str, str]
) -> None:
    fhir.get("/fhir/DocumentReference", params={"patient": dated["p"], "type": "11502-2"})
    event = audit_events(runtime, "document.list")[-1]
    assert str(event.patient_id) == dated["p"]
    assert event.details == {"results": 2, "document_type": "11502-2"}


def test_large_counts_are_capped(fhir: TestClient) -> None:
    bundle = fhir.get("/fhir/DocumentReference", params={"_count": 5000}).json()
    assert "_count=100" in (link(bundle, "self") or "")


def test_dates_are_instants_in_utc(fhir: TestClient, dated: dict[str, str]) -> None:
    resource = fhir.get(f"/fhir/DocumentReference/{dated['note_2024_03']}").json()
    assert resource["date"] == "2024-03-15T08:30:00.000Z"
    stamp = datetime.fromisoformat(resource["meta"]["lastUpdated"])
    assert abs(stamp - datetime.now(UTC)) < timedelta(minutes=5)
