"""FHIR DocumentReference ``_content`` (IHE MHD Full-Text Search Option)."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qsl, urlsplit

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from medvault.runtime import Runtime
from tests.fhir.support import fhir_client, ids, link
from tests.search.support import store_text
from tests.support.factories import create_patient, pdf_bytes, upload_raw


@pytest.fixture
def fhir(app: FastAPI, api_token: str) -> Iterator[TestClient]:
    with fhir_client(app, api_token) as client:
        yield client


def walk(fhir: TestClient, params: dict[str, str]) -> list[str]:
    bundle = fhir.get("/fhir/DocumentReference", params=params).json()
    found = ids(bundle)
    while (following := link(bundle, "next")) is not None:
        query = dict(parse_qsl(urlsplit(following).query))
        bundle = fhir.get("/fhir/DocumentReference", params=query).json()
        found += ids(bundle)
    return found


def test_content_finds_ranks_and_pages(fhir: TestClient, runtime: Runtime) -> None:
    patient = create_patient(fhir)
    titled = upload_raw(fhir, patient, pdf_bytes(), title="Spirometry results").json()["id"]
    texted = []
    for n in range(5):
        doc = upload_raw(fhir, patient, pdf_bytes(), title=f"Clinic note {n}").json()["id"]
        store_text(runtime, doc, f"Spirometry was repeated, visit {n}.")
        texted.append(doc)
    upload_raw(fhir, patient, pdf_bytes(), title="Unrelated")
    first = fhir.get("/fhir/DocumentReference", params={"_content": "spirometry", "_count": "2"})
    assert first.status_code == 200
    bundle = first.json()
    assert bundle["total"] == 6
    assert ids(bundle)[0] == titled  # the title match ranks first
    everything = walk(fhir, {"_content": "spirometry", "_count": "2"})
    assert sorted(everything) == sorted([titled, *texted])
    # Combined with other parameters, and by date when _sort says so.
    dated = walk(fhir, {"_content": "spirometry", "_sort": "-date", "patient": patient})
    assert dated == [*reversed(texted), titled]
    posted = fhir.post(
        "/fhir/DocumentReference/_search", data={"_content": "spirometry,unrelated"}
    ).json()
    assert len(ids(posted)) == 7


@pytest.mark.parametrize("value", ["!!!", "-x", ""])
def test_content_with_nothing_to_find_is_invalid(fhir: TestClient, value: str) -> None:
    response = fhir.get("/fhir/DocumentReference", params={"_content": value})
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("value", ['"', "NEAR(a b)", "a:*", "{x}:y", "x" * 300])
def test_content_never_fails(fhir: TestClient, value: str) -> None:
    response = fhir.get("/fhir/DocumentReference", params={"_content": value})
    assert response.status_code in (200, 400)


def test_relevance_needs_content(fhir: TestClient) -> None:
    response = fhir.get("/fhir/DocumentReference", params={"_sort": "relevance"})
    assert response.status_code == 400


def test_capability_statement_declares_content(fhir: TestClient) -> None:
    statement = fhir.get("/fhir/metadata").json()
    resource = next(r for r in statement["rest"][0]["resource"] if r["type"] == "DocumentReference")
    params = {p["name"]: p for p in resource["searchParam"]}
    assert params["_content"]["type"] == "string"
