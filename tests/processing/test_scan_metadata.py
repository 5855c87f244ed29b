"""The scan verdict and PDF active content, as the REST metadata and FHIR state them.

Both backends, the real clamd of this package (``clamd`` fixture), uploads through the
REST API and the worker's own handlers (``drain``). A vault without a scanner is
covered too: its versions say "not-scanned", never "clean".
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from medvault.documents.active_content import ActiveContent
from medvault.documents.models import ScanState
from medvault.fhir.mapping.document_reference import SCAN_STATE_SYSTEM
from medvault.runtime import Runtime
from tests.fhir.support import sha1_b64, validate_response
from tests.processing.pdf_samples import real_pdf, script_on_open
from tests.processing.scanning_world import (
    BODY_REPORTED_NAME,
    EICAR_PDF,
    drain,
    scanning_backend,
)
from tests.support.backends import Backend
from tests.support.clamd import ClamdServer
from tests.support.factories import create_patient, pdf_bytes, png_bytes, upload_raw


@pytest.fixture
def scanner() -> bool:
    """Whether the vault scans; a test parametrized on ``scanner`` turns it off."""
    return True


@pytest.fixture
def backend(backend: Backend, clamd: ClamdServer, scanner: bool) -> Backend:
    return scanning_backend(backend, clamd, "blocking") if scanner else backend


@pytest.fixture
def api(client: TestClient) -> TestClient:
    """The service account's client, every /fhir answer validated as FHIR R4."""
    client.event_hooks["response"] = [validate_response]
    return client


def _upload(api: TestClient, patient: str, content: bytes, **kwargs: Any) -> dict[str, Any]:
    response = upload_raw(api, patient, content, **kwargs)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def _document(api: TestClient, document_id: str) -> dict[str, Any]:
    response = api.get(f"/api/v1/documents/{document_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _versions(api: TestClient, document_id: str) -> dict[int, dict[str, Any]]:
    response = api.get(f"/api/v1/documents/{document_id}/versions")
    assert response.status_code == 200, response.text
    return {item["version"]: item for item in response.json()["items"]}


def _reference(api: TestClient, reference_id: str) -> dict[str, Any]:
    response = api.get(
        f"/fhir/DocumentReference/{reference_id}", headers={"Accept": "application/fhir+json"}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _scan_codes(resource: dict[str, Any]) -> list[str]:
    return [c["code"] for c in resource["meta"]["security"] if c["system"] == SCAN_STATE_SYSTEM]


def test_a_clean_upload_is_pending_then_clean_in_rest_and_fhir(
    api: TestClient, runtime: Runtime
) -> None:
    patient = create_patient(api)
    content = real_pdf()
    uploaded = _upload(api, patient, content)
    # The upload's own answer already says where the scan stands.
    assert uploaded["scan"] == {
        "state": "pending",
        "engine": None,
        "signature": None,
        "scanned_at": None,
    }
    document_id = uploaded["id"]
    assert _versions(api, document_id)[1]["scan"]["state"] == "pending"
    before = _reference(api, document_id)
    assert _scan_codes(before) == ["pending"]
    # The SHA-1 job has not run either: no hash rather than a guessed one.
    assert "hash" not in before["content"][0]["attachment"]

    assert drain(runtime) >= 2  # the scan and the SHA-1

    scan = _document(api, document_id)["scan"]
    assert scan["state"] == "clean" and scan["signature"] is None
    assert scan["engine"].startswith("ClamAV") and scan["scanned_at"] is not None
    assert _versions(api, document_id)[1]["scan"] == scan
    after = _reference(api, document_id)
    assert after["meta"]["security"] == [
        {"system": SCAN_STATE_SYSTEM, "code": "clean", "display": "No malware found"}
    ]
    assert after["content"][0]["attachment"]["hash"] == sha1_b64(content)


def test_an_infected_version_is_named_with_its_signature_beside_a_clean_one(
    api: TestClient, runtime: Runtime
) -> None:
    patient = create_patient(api)
    document_id = _upload(api, patient, EICAR_PDF)["id"]
    drain(runtime)
    infected = _document(api, document_id)["scan"]
    assert (infected["state"], infected["signature"]) == ("infected", BODY_REPORTED_NAME)
    assert _scan_codes(_reference(api, document_id)) == ["infected"]
    # The FHIR search answer carries it too.
    found = api.get(
        "/fhir/DocumentReference",
        params={"patient": patient},
        headers={"Accept": "application/fhir+json"},
    )
    assert found.status_code == 200, found.text
    (entry,) = found.json()["entry"]
    assert _scan_codes(entry["resource"]) == ["infected"]

    added = api.post(
        f"/api/v1/documents/{document_id}/versions",
        content=real_pdf(),
        headers={"content-type": "application/pdf"},
        params={"filename": "clean-copy.pdf"},
    )
    assert added.status_code == 201, added.text
    assert added.json()["scan"]["state"] == "pending"
    drain(runtime)
    versions = _versions(api, document_id)
    assert {n: v["scan"]["state"] for n, v in versions.items()} == {1: "infected", 2: "clean"}
    assert versions[1]["scan"]["signature"] == BODY_REPORTED_NAME
    assert _document(api, document_id)["scan"]["state"] == "clean"
    # Each version is its own DocumentReference, with its own verdict.
    assert _scan_codes(_reference(api, f"{document_id}.1")) == ["infected"]
    assert _scan_codes(_reference(api, document_id)) == ["clean"]


def test_active_content_is_listed_for_pdfs_only(api: TestClient) -> None:
    patient = create_patient(api)
    scripted = _upload(api, patient, real_pdf(script_on_open))
    assert scripted["active_content"] == ["auto-action", "javascript"]
    document_id = scripted["id"]
    assert _document(api, document_id)["active_content"] == ["auto-action", "javascript"]
    assert _versions(api, document_id)[1]["active_content"] == ["auto-action", "javascript"]
    assert _upload(api, patient, real_pdf())["active_content"] == []
    # Random bytes behind a PDF header: nothing can be said about what a reader would run.
    assert _upload(api, patient, pdf_bytes())["active_content"] == ["unreadable"]
    image = _upload(api, patient, png_bytes(), filename="photo.png", content_type="image/png")
    assert image["active_content"] is None


@pytest.mark.parametrize("scanner", [False])
def test_without_a_scanner_versions_say_not_scanned(api: TestClient, runtime: Runtime) -> None:
    patient = create_patient(api)
    document_id = _upload(api, patient, real_pdf())["id"]
    drain(runtime)  # the SHA-1 job runs; nothing scans
    assert _document(api, document_id)["scan"] == {
        "state": "not-scanned",
        "engine": None,
        "signature": None,
        "scanned_at": None,
    }
    reference = _reference(api, document_id)
    assert reference["meta"]["security"] == [
        {"system": SCAN_STATE_SYSTEM, "code": "not-scanned", "display": "Not scanned for malware"}
    ]


def test_the_openapi_document_describes_scan_and_active_content(anon_client: TestClient) -> None:
    schemas = anon_client.get("/openapi.json").json()["components"]["schemas"]
    scan = schemas["ScanOut"]
    assert set(scan["required"]) == {"state", "engine", "signature", "scanned_at"}
    assert schemas["ScanState"]["enum"] == [state.value for state in ScanState]
    for name in ("DocumentOut", "VersionOut"):
        model = schemas[name]
        assert {"scan", "active_content"} <= set(model["required"]), name
        assert model["properties"]["scan"]["$ref"] == "#/components/schemas/ScanOut"
        described = model["properties"]["active_content"]["description"]
        assert all(f"`{kind.value}`" in described for kind in ActiveContent), name
