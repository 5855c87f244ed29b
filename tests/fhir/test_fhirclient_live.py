"""A real FHIR client, unchanged, against a real server over HTTP.

The SMART on FHIR Python client (``fhirclient``) reads the CapabilityStatement, searches
a patient's DocumentReferences, follows the Bundle's paging links itself, reads one
DocumentReference and fetches its Binary, both as a FHIR resource and as raw bytes.
Its own R4 models are strict, so every resource it parses is validated twice: by it,
and by ``fhir.resources`` through a response hook on its HTTP session.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from fastapi import FastAPI
from fhirclient import client as smart
from fhirclient.models.binary import Binary
from fhirclient.models.documentreference import DocumentReference
from fhirclient.models.patient import Patient
from fhirclient.server import FHIRNotFoundException

from tests.fhir.support import LOG, People, validate_resource
from tests.support.factories import pdf_bytes, upload_raw
from tests.support.live_server import LiveServer


def _validate(response: requests.Response, *args: Any, **kwargs: Any) -> None:
    kind = response.headers.get("content-type", "").split(";")[0].strip()
    if kind in ("application/fhir+json", "application/json") and response.content:
        validate_resource(response.json(), status=response.status_code, where=response.url)


@pytest.fixture
def live(app: FastAPI) -> Iterator[str]:
    with LiveServer(app) as server:
        yield server.url


def smart_client(base: str, token: str) -> smart.FHIRClient:
    client = smart.FHIRClient(settings={"app_id": "medvault-tests", "api_base": f"{base}/fhir/"})
    session = client.server.session
    # Bearer tokens are how the vault authenticates; the client's requests session is
    # its documented extension point for them. Nothing in the library is changed.
    session.headers["Authorization"] = f"Bearer {token}"
    session.hooks["response"].append(_validate)
    return client


def test_fhirclient_searches_pages_reads_and_downloads(
    live: str, fhir: Any, api_token: str, people: People
) -> None:
    uploads = {}
    for size in (1000, 2000, 3000, 4000, 5000):
        content = pdf_bytes(size)
        uploads[upload_raw(fhir, people.patient_a, content).json()["id"]] = content
    upload_raw(fhir, people.patient_b, pdf_bytes())  # someone else's: never in the results
    validated = sum(LOG.counts.values())

    client = smart_client(live, api_token)
    client.prepare()  # reads /metadata and parses it with the client's own R4 models
    statement = client.server.capabilityStatement
    assert statement.fhirVersion == "4.0.1"
    served = {resource.type for resource in statement.rest[0].resource}
    assert served == {"DocumentReference", "Binary", "Patient", "AuditEvent"}

    search = DocumentReference.where(struct={"patient": people.patient_a, "_count": "2"})
    pages = list(search.perform_iter(client.server))
    assert [len(page.entry or []) for page in pages] == [2, 2, 1]
    assert all(page.total == 5 for page in pages)
    found = [entry.resource for page in pages for entry in page.entry or []]
    assert sorted(resource.id for resource in found) == sorted(uploads)

    chosen = found[3]
    reference = DocumentReference.read(chosen.id, client.server)
    assert reference.subject.reference == f"Patient/{people.patient_a}"
    assert reference.status == "current"
    attachment = reference.content[0].attachment
    binary_id = attachment.url.rsplit("/", 1)[1]
    expected = uploads[reference.id]
    assert attachment.size == len(expected)

    as_resource = Binary.read(binary_id, client.server)
    assert as_resource.contentType == "application/pdf"
    assert base64.b64decode(as_resource.data) == expected
    raw = client.server.request_data(f"Binary/{binary_id}", headers={"Accept": "*/*"})
    assert raw == expected

    patient = Patient.read(people.patient_a, client.server)
    assert patient.id == people.patient_a
    assert sum(LOG.counts.values()) > validated + 5  # the hook really validated


def test_fhirclient_as_a_patient_sees_only_their_record(
    live: str, fhir: Any, people: People
) -> None:
    upload_raw(fhir, people.patient_a, pdf_bytes())
    theirs = upload_raw(fhir, people.patient_b, pdf_bytes()).json()
    token = people.patient.headers["Authorization"].split(" ", 1)[1]
    client = smart_client(live, token)

    other = DocumentReference.where(struct={"patient": people.patient_b})
    bundles = list(other.perform_iter(client.server))
    assert len(bundles) == 1 and bundles[0].total == 0 and not bundles[0].entry
    with pytest.raises(FHIRNotFoundException):
        DocumentReference.read(theirs["id"], client.server)
    own = DocumentReference.where(struct={"patient": people.patient_a})
    assert len(list(own.perform_resources_iter(client.server))) == 1
