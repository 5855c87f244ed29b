"""FHIR test helpers: every FHIR JSON response is validated against the R4 models.

``validate_response`` is installed as an httpx response hook on the FHIR test clients
(and on the requests session of the real fhirclient in the live test), so no test can
forget it: a resource that does not parse as FHIR R4 fails the test that received it.
``fhir.resources`` ships R4B models, identical to R4 for every resource served here.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fhir.resources.R4B import get_fhir_model_class

FHIR_JSON_TYPES = ("application/fhir+json", "application/json")
DOCUMENT_STATUSES = {"current", "superseded", "entered-in-error"}


@dataclass
class ValidationLog:
    """How many FHIR resources were validated, by type: proof the hook really ran."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, resource_type: str) -> None:
        self.counts[resource_type] = self.counts.get(resource_type, 0) + 1


LOG = ValidationLog()


def validate_resource(data: Any, *, status: int | None = None, where: str = "") -> None:
    """Parse ``data`` with the R4 model for its resourceType, plus the server's invariants."""
    assert isinstance(data, dict), f"{where}: not a JSON object"
    kind = data.get("resourceType")
    assert isinstance(kind, str), f"{where}: no resourceType"
    model = get_fhir_model_class(kind)
    model.model_validate(data)  # raises pydantic.ValidationError: the test fails
    LOG.add(kind)
    if status is not None and status >= 400:
        assert kind == "OperationOutcome", f"{where}: error {status} answered with {kind}"
        assert data["issue"], f"{where}: OperationOutcome without issues"
    if kind == "Bundle":
        for index, entry in enumerate(data.get("entry") or []):
            if "resource" in entry:
                validate_resource(entry["resource"], where=f"{where} entry {index}")
                resource = entry["resource"]
                full_url = entry.get("fullUrl", "")
                if "id" in resource and not full_url.startswith("urn:uuid:"):
                    assert full_url.endswith(f"/{resource['resourceType']}/{resource['id']}")
        if data["type"] == "searchset":
            relations = [link["relation"] for link in data.get("link", [])]
            assert "self" in relations, f"{where}: searchset without a self link"
    if kind == "DocumentReference":
        assert data["status"] in DOCUMENT_STATUSES
        attachment = data["content"][0]["attachment"]
        if "hash" in attachment:
            assert len(base64.b64decode(attachment["hash"])) == 20  # SHA-1, as R4 defines


def validate_response(response: httpx.Response) -> None:
    """httpx response hook: validate every FHIR JSON response of a /fhir request."""
    if not response.request.url.path.startswith("/fhir"):
        return
    response.read()
    kind = response.headers.get("content-type", "").split(";")[0].strip()
    where = f"{response.request.method} {response.request.url}"
    if response.status_code >= 400:
        assert kind == "application/fhir+json", f"{where}: error {response.status_code} as {kind}"
    if kind == "application/fhir+ndjson":
        # Bulk export files: every line is a resource a read would return.
        for number, line in enumerate(response.text.splitlines(), start=1):
            validate_resource(json.loads(line), where=f"{where} line {number}")
        return
    if kind not in FHIR_JSON_TYPES or not response.content:
        return
    if "/$export-status/" in response.request.url.path and response.status_code == 200:
        # A Bulk Data manifest is plain JSON, not a FHIR resource (the IG defines it).
        manifest = response.json()
        assert manifest["requiresAccessToken"] is True, where
        assert {"transactionTime", "request", "output", "error"} <= manifest.keys(), where
        return
    validate_resource(response.json(), status=response.status_code, where=where)


@contextmanager
def fhir_client(app: FastAPI, token: str | None = None) -> Iterator[TestClient]:
    """A TestClient whose every FHIR response is validated."""
    with TestClient(app, raise_server_exceptions=False) as client:
        client.event_hooks["response"] = [validate_response]
        if token is not None:
            client.headers["Authorization"] = f"Bearer {token}"
        yield client


@dataclass
class People:
    """Patient A (on the clinician's care team, and the patient user's own) and B.

    The ``people`` fixture (tests/fhir/conftest.py) builds it; each client is logged in.
    """

    patient_a: str
    patient_b: str
    clinician: TestClient
    patient: TestClient
    auditor: TestClient
    admin: TestClient
    clinician_id: str
    patient_user_id: str


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sha1_b64(data: bytes) -> str:
    return b64(hashlib.sha1(data, usedforsecurity=False).digest())


def document_reference(
    patient_id: str,
    data: bytes | None = None,
    *,
    url: str | None = None,
    code: str = "11502-2",
    content_type: str | None = "application/pdf",
    **extra: Any,
) -> dict[str, Any]:
    attachment: dict[str, Any] = {}
    if content_type:
        attachment["contentType"] = content_type
    if data is not None:
        attachment["data"] = b64(data)
    if url is not None:
        attachment["url"] = url
    resource: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "content": [{"attachment": attachment}],
    }
    resource.update(extra)
    return resource


def post_resource(
    client: TestClient, path: str, resource: dict[str, Any], **headers: str
) -> httpx.Response:
    response: httpx.Response = client.post(
        path,
        content=json.dumps(resource).encode(),
        headers={"content-type": "application/fhir+json", **headers},
    )
    return response


def entries(bundle: dict[str, Any], mode: str = "match") -> list[dict[str, Any]]:
    return [
        entry["resource"]
        for entry in bundle.get("entry", [])
        if entry.get("search", {}).get("mode", "match") == mode
    ]


def ids(bundle: dict[str, Any]) -> list[str]:
    """The ids of a searchset's matches, in order."""
    return [str(resource["id"]) for resource in entries(bundle)]


def link(bundle: dict[str, Any], relation: str) -> str | None:
    for item in bundle.get("link", []):
        if item["relation"] == relation:
            return str(item["url"])
    return None
