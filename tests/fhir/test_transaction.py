"""Transaction Bundles: Binary + DocumentReference by urn:uuid, stored all or nothing."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from medvault.runtime import Runtime
from tests.fhir.support import b64, document_reference, post_resource
from tests.support.factories import create_patient, pdf_bytes, png_bytes
from tests.support.inspect import audit_events, stored_state


def binary_entry(content: bytes, content_type: str = "application/pdf") -> dict[str, Any]:
    return {
        "fullUrl": f"urn:uuid:{uuid.uuid4()}",
        "resource": {"resourceType": "Binary", "contentType": content_type, "data": b64(content)},
        "request": {"method": "POST", "url": "Binary"},
    }


def reference_entry(patient: str, binary: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "fullUrl": f"urn:uuid:{uuid.uuid4()}",
        "resource": document_reference(patient, url=binary["fullUrl"], **extra),
        "request": {"method": "POST", "url": "DocumentReference"},
    }


def bundle(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def test_a_transaction_stores_binaries_and_their_references(
    fhir: TestClient, runtime: Runtime
) -> None:
    patient = create_patient(fhir)
    pdf, png = pdf_bytes(), png_bytes()
    first, second = binary_entry(pdf), binary_entry(png, "image/png")
    inline = {
        "resource": document_reference(patient, pdf_bytes(), code="11506-3"),
        "request": {"method": "POST", "url": "DocumentReference"},
    }
    # A DocumentReference may come before the Binary it names.
    sent = bundle(
        reference_entry(patient, second, code="18748-4", content_type="image/png"),
        first,
        second,
        inline,
        reference_entry(patient, first, code="11502-2"),
    )

    response = post_resource(fhir, "/fhir", sent)

    assert response.status_code == 200, response.text
    result = response.json()
    assert result["type"] == "transaction-response"
    assert [e["response"]["status"] for e in result["entry"]] == ["201 Created"] * 5
    imaging, lab = result["entry"][0]["resource"], result["entry"][4]["resource"]
    assert imaging["type"]["coding"][0]["code"] == "18748-4"
    assert result["entry"][2]["response"]["location"].startswith("Binary/")
    binary_id = result["entry"][2]["response"]["location"].split("/")[1]
    assert imaging["content"][0]["attachment"]["url"].endswith(f"/Binary/{binary_id}")
    assert fhir.get(f"/fhir/Binary/{binary_id}").content == png
    assert fhir.get(lab["content"][0]["attachment"]["url"]).content == pdf
    assert stored_state(runtime).documents == 3
    assert len(audit_events(runtime, "document.create")) == 3


def _broken(patient: str, case: str) -> dict[str, Any]:
    good = binary_entry(pdf_bytes())
    later = binary_entry(pdf_bytes())
    entries = [good, reference_entry(patient, good), later, reference_entry(patient, later)]
    last = entries[3]["resource"]
    match case:
        case "invalid type":
            last["type"] = {"coding": [{"system": "http://loinc.org", "code": "not-loinc"}]}
        case "bad base64 in the last binary":
            later["resource"]["data"] = "@@@@" + later["resource"]["data"]
        case "dangling reference":
            last["content"][0]["attachment"]["url"] = f"urn:uuid:{uuid.uuid4()}"
        case "unreferenced binary":
            entries.append(binary_entry(pdf_bytes()))
        case "binary twice":
            last["content"][0]["attachment"]["url"] = good["fullUrl"]
        case "foreign content type":
            later["resource"]["contentType"] = "image/png"
        case "unknown patient":
            last["subject"] = {"reference": f"Patient/{uuid.uuid4()}"}
        case "duplicate content":
            later["resource"]["data"] = good["resource"]["data"]
        case "unsupported method":
            entries[3]["request"]["method"] = "PUT"
        case "unsupported resource":
            entries.append(
                {
                    "resource": {"resourceType": "Basic", "code": {"text": "x"}},
                    "request": {"method": "POST", "url": "Basic"},
                }
            )
        case "not valid FHIR":
            last["content"][0]["attachment"]["colour"] = "blue"
    return bundle(*entries)


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("invalid type", 422),
        ("bad base64 in the last binary", 400),
        ("dangling reference", 422),
        ("unreferenced binary", 422),
        ("binary twice", 422),
        ("foreign content type", 422),
        ("unknown patient", 422),
        ("duplicate content", 409),
        ("unsupported method", 422),
        ("unsupported resource", 422),
        ("not valid FHIR", 400),
    ],
)
def test_one_invalid_entry_stores_nothing(
    fhir: TestClient, runtime: Runtime, case: str, status: int
) -> None:
    patient = create_patient(fhir)
    before = stored_state(runtime)
    creates = len(audit_events(runtime, "document.create", outcome="success"))

    response = post_resource(fhir, "/fhir", _broken(patient, case))

    assert response.status_code == status, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    # No row, no blob, no half-written upload, no audit event of a create.
    assert stored_state(runtime) == before
    assert len(audit_events(runtime, "document.create", outcome="success")) == creates


def test_the_failing_entry_is_named(fhir: TestClient) -> None:
    patient = create_patient(fhir)
    response = post_resource(fhir, "/fhir", _broken(patient, "invalid type"))
    assert response.json()["issue"][0]["expression"] == ["Bundle.entry[3].resource.type"]


def test_only_transactions_are_accepted(fhir: TestClient, runtime: Runtime) -> None:
    patient = create_patient(fhir)
    good = binary_entry(pdf_bytes())
    batch = bundle(good, reference_entry(patient, good))
    batch["type"] = "batch"
    before = stored_state(runtime)
    response = post_resource(fhir, "/fhir", batch)
    assert response.status_code == 422
    assert stored_state(runtime) == before
    not_a_bundle = post_resource(fhir, "/fhir", document_reference(patient, pdf_bytes()))
    assert not_a_bundle.status_code == 400
    assert stored_state(runtime) == before


def test_a_security_context_must_agree(fhir: TestClient, runtime: Runtime) -> None:
    patient, other = create_patient(fhir), create_patient(fhir)
    good = binary_entry(pdf_bytes())
    good["resource"]["securityContext"] = {"reference": f"Patient/{other}"}
    before = stored_state(runtime)
    response = post_resource(fhir, "/fhir", bundle(good, reference_entry(patient, good)))
    assert response.status_code == 422
    assert stored_state(runtime) == before
    fixed = copy.deepcopy(good)
    fixed["resource"]["securityContext"] = {"reference": f"Patient/{patient}"}
    accepted = post_resource(fhir, "/fhir", bundle(fixed, reference_entry(patient, fixed)))
    assert accepted.status_code == 200, accepted.text
