"""The authorization matrix, generated from the app's own route table.

Every registered route must have a spec below, or this test fails: a new endpoint
cannot ship without someone deciding, in writing, who may call it. Each spec says
what every principal gets for each target:

* ``own``     — patient A's record: the patient user's own, and on the clinician's care team;
* ``foreign`` — patient B's record: nobody's care team, not the patient user's;
* ``deleted`` — a soft-deleted document of patient A.

The principals are the roles' login sessions and API tokens of every SMART scope family
(``patient/`` bound to the patient user and unbound, ``user/`` bound to the clinician
and unbound, ``system/``) and of the vault's own permission names (``*``,
``audit:read``). A token principal takes the expectations of the role it acts like
(:data:`TOKENS`) unless a spec names it. Beyond the status, no answer may carry an id
of a record outside the principal's reach (:func:`leaked_ids`): a search that answers
200 with someone else's rows fails as surely as a read that answers 200.

Every non-public route is also called with no token, an expired token and a tampered
token (all 401). It runs on SQLite + filesystem and on PostgreSQL + S3.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import jwt
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from medvault.auth.jwt_tokens import issue_access_token
from medvault.auth.principal import Role
from medvault.auth.service import create_api_token
from medvault.governance.exports import AUDIENCE
from medvault.kit.clock import utcnow
from medvault.runtime import Runtime
from tests.fhir.bulk_support import PREFER, run_exports
from tests.fhir.support import validate_response
from tests.support.factories import (
    create_patient,
    patient_payload,
    pdf_bytes,
    put_on_care_team,
    text_pdf_bytes,
    upload_raw,
)
from tests.support.jobs import run_due_jobs
from tests.support.users import UserFactory, login

ROLES = ("service", "admin", "clinician", "patient", "auditor")
TARGETS = ("own", "foreign", "deleted")
Request = tuple[str, str, dict[str, Any]]


@dataclass(frozen=True)
class Token:
    """An API token principal: its scopes, the user it belongs to, the role it acts like."""

    scopes: tuple[str, ...]
    owner: str | None  # "patient" or "clinician": the world's user the token belongs to
    like: str  # the role whose expectations apply where a spec does not name the token
    reach: str  # "all", "own" (patient A only) or "none" (no patient at all)


TOKENS = {
    # SMART patient/: the patient in context is the owner's patient; without an owner, none.
    "patient/ token": Token(("patient/*.*",), "patient", like="patient", reach="own"),
    "patient/ unbound": Token(("patient/*.*",), None, like="patient", reach="none"),
    # SMART user/ and system/: every patient (an API token's own reach), as "*" does,
    # but only the resources SMART names: no user admin, no metrics.
    "user/ token": Token(("user/*.*",), "clinician", like="service", reach="all"),
    "user/ unbound": Token(("user/*.*",), None, like="service", reach="all"),
    "system/ token": Token(("system/*.*",), None, like="service", reach="all"),
    # The vault's own permission names ("service" above is "*").
    "audit:read": Token(("audit:read",), None, like="auditor", reach="all"),
    # A records manager's token: governance only, nothing clinical (like an auditor's).
    "records:govern": Token(("records:govern",), None, like="auditor", reach="all"),
}
SMART = ("patient/ token", "patient/ unbound", "user/ token", "user/ unbound", "system/ token")
PRINCIPALS = (*ROLES, *TOKENS)
# Whose records each principal reaches; None: every patient's.
REACH = {"clinician": "own", "patient": "own"} | {
    name: token.reach for name, token in TOKENS.items()
}


@dataclass
class World:
    service: TestClient
    patients: dict[str, str]
    documents: dict[str, str]
    tokens: dict[str, str]
    users: dict[str, uuid.UUID]
    secret_key: bytes = b""
    expired: str = ""
    tampered: str = ""
    credentials: dict[str, tuple[str, str]] = field(default_factory=dict)
    runtime: Runtime | None = None

    def patient_for(self, target: str) -> str:
        return self.patients["foreign" if target == "foreign" else "own"]

    def fresh_document(self, target: str) -> str:
        """A new document for mutating calls, so cells never disturb each other."""
        doc = upload_raw(self.service, self.patient_for(target), pdf_bytes()).json()["id"]
        if target == "deleted":
            self.service.delete(f"/api/v1/documents/{doc}", params={"reason": "matrix"})
        return str(doc)


@dataclass(frozen=True)
class Spec:
    build: Callable[[World, str], Request]
    expect: Mapping[str, int | tuple[int, int, int]]
    public: bool = False
    # For what belongs to its creator (a resumable upload): builds the request for the
    # caller's own token, so a cell says what the caller gets on *their own* upload.
    build_as: Callable[[World, str, str | None], Request] | None = None

    def request(self, world: World, target: str, token: str | None) -> Request:
        if self.build_as is not None:
            return self.build_as(world, target, token)
        return self.build(world, target)


def doc(
    path: str = "", method: str = "GET", fresh: bool = False, **kwargs: Any
) -> Callable[[World, str], Request]:
    def build(world: World, target: str) -> Request:
        document = world.fresh_document(target) if fresh else world.documents[target]
        return method, f"/api/v1/documents/{document}{path}", dict(kwargs)

    return build


def fixed(method: str, url: str, **kwargs: Any) -> Callable[[World, str], Request]:
    return lambda world, target: (method, url, dict(kwargs))


def quarantine_decision(action: str) -> Callable[[World, str], Request]:
    def build(world: World, target: str) -> Request:
        document = world.documents[target]
        url = f"/api/v1/quarantine/{document}/versions/1/{action}"
        return "POST", url, {"params": {"reason": "matrix"}}

    return build


def upload_for(world: World, target: str) -> Request:
    return (
        "POST",
        "/api/v1/documents",
        {
            "params": {"patient_id": world.patient_for(target), "document_type": "11502-2"},
            "content": pdf_bytes(),
            "headers": {"content-type": "application/pdf"},
        },
    )


def version_for(world: World, target: str) -> Request:
    document = world.fresh_document(target)
    return (
        "POST",
        f"/api/v1/documents/{document}/versions",
        {"content": pdf_bytes(), "headers": {"content-type": "application/pdf"}},
    )


TUS = {"Tus-Resumable": "1.0.0"}


def tus_create(world: World, target: str) -> Request:
    metadata = {
        "patient_id": world.patient_for(target),
        "document_type": "11502-2",
        "on_duplicate": "allow",
    }
    encoded = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in metadata.items())
    headers = {**TUS, "Upload-Length": str(len(pdf_bytes())), "Upload-Metadata": encoded}
    return "POST", "/api/v1/uploads", {"headers": headers}


def tus_upload_url(world: World, target: str, token: str | None) -> str:
    """An upload of the caller's own for the target's patient; where the caller may not
    start one, the service account's (which the caller must then not see)."""
    _, url, kwargs = tus_create(world, target)
    if token is not None:
        headers = {**kwargs["headers"], "Authorization": f"Bearer {token}"}
        created = world.service.post(url, headers=headers)
        if created.status_code == 201:
            return str(created.headers["Location"])
    created = world.service.post(url, headers=kwargs["headers"])
    assert created.status_code == 201, created.text
    return str(created.headers["Location"])


def tus_on_own_upload(method: str) -> Callable[[World, str, str | None], Request]:
    def build(world: World, target: str, token: str | None) -> Request:
        url = tus_upload_url(world, target, token)
        if method == "PATCH":
            headers = {
                **TUS,
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
            }
            return method, url, {"headers": headers, "content": pdf_bytes()}
        return method, url, {"headers": dict(TUS)}

    return build


# Uploads: the single-request upload's policy; an upload is its creator's alone.
ON_OWN_UPLOAD = {
    "admin": 403,
    "patient/ unbound": 404,  # reaches no patient: its own uploads cannot exist
    "auditor": 403,
}


def patient_read(world: World, target: str) -> Request:
    return "GET", f"/api/v1/patients/{world.patient_for(target)}", {}


def new_user(world: World, target: str) -> Request:
    name = f"matrix-{uuid.uuid4().hex[:8]}"
    return (
        "POST",
        "/api/v1/users",
        {
            "json": {
                "username": name,
                "email": f"{name}@hospital.example",
                "password": "a-long-password-1",
                "role": "clinician",
            }
        },
    )


def user_path(suffix: str = "", method: str = "GET") -> Callable[[World, str], Request]:
    return lambda world, target: (method, f"/api/v1/users/{world.users['scratch']}{suffix}", {})


def care_team_add(world: World, target: str) -> Request:
    return (
        "POST",
        "/api/v1/care-teams",
        {
            "json": {
                "clinician_id": str(world.users["clinician"]),
                "patient_id": world.patients["foreign"],
            }
        },
    )


def care_team_remove(world: World, target: str) -> Request:
    return (
        "DELETE",
        (f"/api/v1/care-teams/{world.users['clinician']}/{world.patients['foreign']}"),
        {},
    )


EXPORT_BODY = {"passphrase": "violet anchor river seventeen"}


def export_request(world: World, target: str) -> Request:
    return "POST", f"/api/v1/patients/{world.patient_for(target)}/exports", {"json": EXPORT_BODY}


def own_export(world: World, target: str, token: str | None) -> Request:
    """The caller's own export of the target's patient; where the caller may not ask for
    one, the service account's (which the caller must then not see)."""
    _, url, kwargs = export_request(world, target)
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    created = world.service.post(url, json=kwargs["json"], headers=headers)
    if created.status_code != 202:
        created = world.service.post(url, json=kwargs["json"])
    assert created.status_code == 202, created.text
    return "GET", str(created.headers["Location"]), {}


def export_link(world: World, target: str) -> Request:
    """A well-signed link to an export that does not exist: the link is the credential."""
    claims = {"sub": str(uuid.uuid4()), "aud": AUDIENCE, "exp": utcnow() + timedelta(hours=1)}
    token = jwt.encode(claims, world.secret_key, algorithm="HS256")
    return "GET", f"/api/v1/exports/download/{token}", {}


def signed_link(world: World, target: str) -> Request:
    url = world.service.post(f"/api/v1/documents/{world.documents['own']}/download-url").json()
    return "GET", url["url"].split("testserver", 1)[1], {}


def fhir_document(
    path: str = "", method: str = "GET", fresh: bool = False, **kwargs: Any
) -> Callable[[World, str], Request]:
    def build(world: World, target: str) -> Request:
        document = world.fresh_document(target) if fresh else world.documents[target]
        return method, f"/fhir/DocumentReference/{document}{path}", dict(kwargs)

    return build


def fhir_current(world: World, document: str) -> dict[str, Any]:
    """The DocumentReference as the service account sees it (to address its version)."""
    found = world.service.get(f"/fhir/DocumentReference/{document}").json()
    assert isinstance(found, dict)
    return found


def fhir_vread(world: World, target: str) -> Request:
    document = world.documents[target]
    version = fhir_current(world, document)["meta"]["versionId"]
    return "GET", f"/fhir/DocumentReference/{document}/_history/{version}", {}


def fhir_binary(suffix: str = "") -> Callable[[World, str], Request]:
    def build(world: World, target: str) -> Request:
        url = fhir_current(world, world.documents[target])["content"][0]["attachment"]["url"]
        return "GET", f"/fhir/Binary/{url.rsplit('/', 1)[1]}{suffix}", {}

    return build


def fhir_update(world: World, target: str) -> Request:
    document = world.fresh_document(target)
    resource = fhir_current(world, document)
    resource["description"] = "Edited through FHIR"
    return (
        "PUT",
        f"/fhir/DocumentReference/{document}",
        {
            "json": resource,
            "headers": {"If-Match": f'W/"{resource["meta"]["versionId"]}"'},
        },
    )


def fhir_new_document(world: World, target: str) -> dict[str, Any]:
    return {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": {"coding": [{"system": "http://loinc.org", "code": "11502-2"}]},
        "subject": {"reference": f"Patient/{world.patient_for(target)}"},
        "content": [
            {
                "attachment": {
                    "contentType": "application/pdf",
                    "data": base64.b64encode(pdf_bytes()).decode(),
                }
            }
        ],
    }


def fhir_create(world: World, target: str) -> Request:
    return "POST", "/fhir/DocumentReference", {"json": fhir_new_document(world, target)}


def fhir_transaction(world: World, target: str) -> Request:
    resource = fhir_new_document(world, target)
    resource["content"][0]["attachment"] = {"url": "urn:uuid:9e3d7a52-0c3e-4bde-9d5e-0f7a1c9e2b41"}
    binary = {
        "resourceType": "Binary",
        "contentType": "application/pdf",
        "data": base64.b64encode(pdf_bytes()).decode(),
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:9e3d7a52-0c3e-4bde-9d5e-0f7a1c9e2b41",
                "resource": binary,
                "request": {"method": "POST", "url": "Binary"},
            },
            {"resource": resource, "request": {"method": "POST", "url": "DocumentReference"}},
        ],
    }
    return "POST", "/fhir", {"json": bundle}


def fhir_binary_create(world: World, target: str) -> Request:
    return (
        "POST",
        "/fhir/Binary",
        {
            "content": pdf_bytes(),
            "headers": {
                "content-type": "application/pdf",
                "X-Security-Context": f"Patient/{world.patient_for(target)}",
            },
        },
    )


def fhir_patient(world: World, target: str) -> Request:
    return "GET", f"/fhir/Patient/{world.patient_for(target)}", {}


def access_history(world: World, target: str) -> Request:
    return "GET", f"/api/v1/patients/{world.patient_for(target)}/access-history", {}


def audit_events_about(world: World, target: str) -> Request:
    return "GET", "/api/v1/audit/events", {"params": {"patient_id": world.patient_for(target)}}


def fhir_audit_events_about(world: World, target: str) -> Request:
    return "GET", "/fhir/AuditEvent", {"params": {"patient": world.patient_for(target)}}


def fhir_audit_search_about(world: World, target: str) -> Request:
    return (
        "POST",
        "/fhir/AuditEvent/_search",
        {"data": {"patient": world.patient_for(target), "_count": "5"}},
    )


def fhir_audit_event(world: World, target: str) -> Request:
    """An event about the target's patient, found as the service account (whole log)."""
    found = world.service.get(
        "/fhir/AuditEvent", params={"patient": world.patient_for(target), "_count": "1"}
    ).json()
    return "GET", f"/fhir/AuditEvent/{found['entry'][0]['resource']['id']}", {}


def bulk_export_of(world: World, token: str | None) -> dict[str, Any] | None:
    """A finished export started by ``token``'s principal: status URL and manifest."""
    if token is None:
        return None
    started = world.service.get(
        "/fhir/Patient/$export", headers={**PREFER, "Authorization": f"Bearer {token}"}
    )
    if started.status_code != 202:
        return None
    assert world.runtime is not None
    run_exports(world.runtime)
    status = str(started.headers["Content-Location"])
    manifest = world.service.get(status, headers={"Authorization": f"Bearer {token}"}).json()
    return {"status": status, "manifest": manifest}


def _relative(url: str) -> str:
    return url.split("testserver", 1)[1]


def bulk_status(method: str) -> Callable[[World, str, str | None], Request]:
    """The caller's own export if it may start one, else the service account's (unseen)."""

    def build(world: World, target: str, token: str | None) -> Request:
        found = bulk_export_of(world, token) or bulk_export_of(world, world.tokens["service"])
        assert found is not None
        return method, _relative(found["status"]), {}

    return build


def bulk_file(world: World, target: str, token: str | None) -> Request:
    """The first file of the caller's own export; an empty export has none: the service's."""
    found = bulk_export_of(world, token)
    if found is None or not found["manifest"]["output"]:
        found = bulk_export_of(world, world.tokens["service"])
    assert found is not None
    return "GET", _relative(found["manifest"]["output"][0]["url"]), {}


# Bulk export: anyone who reads patients and documents may start one (for the patients
# they reach); its status and files are its requester's alone (anyone else: 404).
EXPORT_START = {**dict.fromkeys(ROLES, 202), "auditor": 403}
EXPORT_OWNER = {**dict.fromkeys(ROLES, 200), "auditor": 404}


ALL_200 = dict.fromkeys(ROLES, 200)  # tokens: as the role they act like
# Whole-log readers: the auditor's REST API, checkpoints and proofs.
ONLY_AUDIT = {
    **dict.fromkeys(PRINCIPALS, 403),
    **dict.fromkeys(("service", "auditor", "audit:read", "user/ token"), 200),
    **dict.fromkeys(("user/ unbound", "system/ token"), 200),
}
# Audit events searched (FHIR): whole-log readers, and patients about their own record
# (a foreign patient's events are simply not among the results: see leaked_ids).
AUDIT_SEARCH = {**ONLY_AUDIT, "patient": 200, "patient/ token": 200, "patient/ unbound": 200}
ONLY_ADMIN = {
    **dict.fromkeys(PRINCIPALS, 403),
    "service": 200,
    "admin": 200,
}


# Records governance (holds, appraisal): admins, "*" tokens and records:govern tokens.
GOVERN = {**ONLY_ADMIN, "records:govern": 200}


def govern(ok: int) -> dict[str, int | tuple[int, int, int]]:
    return {role: (ok if status == 200 else status) for role, status in GOVERN.items()}


def new_hold(world: World) -> str:
    """A fresh hold on the own patient, placed by the service account."""
    response = world.service.post(
        "/api/v1/governance/holds",
        json={
            "scope": "patient",
            "patient_id": world.patients["own"],
            "reason": "r",
            "reference": "m",
        },
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def place_hold(world: World, target: str) -> Request:
    body = {
        "scope": "patient",
        "patient_id": world.patient_for(target),
        "reason": "Inquiry",
        "reference": "matrix",
    }
    return "POST", "/api/v1/governance/holds", {"json": body}


def patient_update(world: World, target: str) -> Request:
    body = {"treatment_ended_on": "2020-01-01"}
    return "PATCH", f"/api/v1/patients/{world.patient_for(target)}", {"json": body}


def admin_only(ok: int) -> dict[str, int | tuple[int, int, int]]:
    return {role: (ok if status == 200 else status) for role, status in ONLY_ADMIN.items()}


SPECS: dict[tuple[str, str], Spec] = {
    # Operations and documentation: public.
    ("GET", "/healthz"): Spec(fixed("GET", "/healthz"), ALL_200, public=True),
    ("GET", "/readyz"): Spec(fixed("GET", "/readyz"), ALL_200, public=True),
    ("GET", "/openapi.json"): Spec(fixed("GET", "/openapi.json"), ALL_200, public=True),
    ("GET", "/docs"): Spec(fixed("GET", "/docs"), ALL_200, public=True),
    ("GET", "/docs/oauth2-redirect"): Spec(
        fixed("GET", "/docs/oauth2-redirect"), ALL_200, public=True
    ),
    ("GET", "/redoc"): Spec(fixed("GET", "/redoc"), ALL_200, public=True),
    ("GET", "/metrics"): Spec(fixed("GET", "/metrics"), ONLY_ADMIN),
    # Patients.
    ("POST", "/api/v1/patients"): Spec(
        lambda world, target: ("POST", "/api/v1/patients", {"json": patient_payload()}),
        # SMART Patient.c (in */*.* scopes) grants patients:write to every token family,
        # a patient/ one too: the new patient is then outside that token's reach.
        {**admin_only(201), "clinician": 201, **dict.fromkeys(SMART, 201)},
    ),
    ("GET", "/api/v1/patients"): Spec(
        fixed("GET", "/api/v1/patients"), {**ALL_200, "auditor": 403}
    ),
    ("PATCH", "/api/v1/patients/{patient_id}"): Spec(
        patient_update,
        {
            "service": 200,
            "admin": (200, 200, 200),
            "clinician": (200, 404, 200),
            "patient": 403,
            # SMART lets a patient/ token write Patient, but not the dates that decide
            # when the record may be destroyed.
            "patient/ token": (403, 404, 403),
            "patient/ unbound": 404,
            "auditor": 403,
        },
    ),
    ("GET", "/api/v1/patients/{patient_id}"): Spec(
        patient_read,
        {
            "service": (200, 200, 200),
            "admin": (200, 200, 200),
            "clinician": (200, 404, 200),
            "patient": (200, 404, 200),
            "auditor": 403,
        },
    ),
    # Documents.
    ("POST", "/api/v1/documents"): Spec(
        upload_for,
        {
            "service": 201,
            "admin": 403,
            "clinician": (201, 422, 201),
            "patient": (201, 422, 201),
            "auditor": 403,
        },
    ),
    ("GET", "/api/v1/documents"): Spec(
        fixed("GET", "/api/v1/documents"), {**ALL_200, "auditor": 403}
    ),
    # Resumable (tus) uploads.
    ("OPTIONS", "/api/v1/uploads"): Spec(
        fixed("OPTIONS", "/api/v1/uploads"), dict.fromkeys(ROLES, 204), public=True
    ),
    ("POST", "/api/v1/uploads"): Spec(
        tus_create,
        {
            "service": 201,
            "admin": 403,
            "clinician": (201, 422, 201),
            "patient": (201, 422, 201),
            "auditor": 403,
        },
    ),
    ("HEAD", "/api/v1/uploads/{upload_id}"): Spec(
        tus_create,
        {
            "service": 200,
            "clinician": (200, 404, 200),
            "patient": (200, 404, 200),
            **ON_OWN_UPLOAD,
        },
        build_as=tus_on_own_upload("HEAD"),
    ),
    ("PATCH", "/api/v1/uploads/{upload_id}"): Spec(
        tus_create,
        {
            "service": 204,
            "clinician": (204, 404, 204),
            "patient": (204, 404, 204),
            **ON_OWN_UPLOAD,
        },
        build_as=tus_on_own_upload("PATCH"),
    ),
    ("DELETE", "/api/v1/uploads/{upload_id}"): Spec(
        tus_create,
        {
            "service": 204,
            "clinician": (204, 404, 204),
            "patient": (204, 404, 204),
            **ON_OWN_UPLOAD,
        },
        build_as=tus_on_own_upload("DELETE"),
    ),
    ("GET", "/api/v1/documents/{document_id}"): Spec(
        doc(),
        {
            "service": 200,
            "admin": 200,
            "clinician": (200, 404, 200),
            "patient": (200, 404, 200),
            "auditor": 403,
        },
    ),
    ("GET", "/api/v1/documents/{document_id}/versions"): Spec(
        doc("/versions"),
        {
            "service": 200,
            "admin": 200,
            "clinician": (200, 404, 200),
            "patient": (200, 404, 200),
            "auditor": 403,
        },
    ),
    ("POST", "/api/v1/documents/{document_id}/versions"): Spec(
        version_for,
        {
            "service": (201, 201, 410),
            "admin": 403,
            "clinician": (201, 404, 410),
            # The world's documents are staff-authored: a patient adds versions only to
            # their own uploads (access.authorship; tests/access/test_version_authorship.py).
            "patient": (403, 404, 410),
            "auditor": 403,
        },
    ),
    ("GET", "/api/v1/documents/{document_id}/content"): Spec(
        doc("/content"),
        {
            "service": (200, 200, 410),
            "admin": 403,
            "clinician": (200, 404, 410),
            "patient": (200, 404, 410),
            "auditor": 403,
        },
    ),
    ("GET", "/api/v1/documents/{document_id}/versions/{number}/content"): Spec(
        doc("/versions/1/content"),
        {
            "service": (200, 200, 410),
            "admin": 403,
            "clinician": (200, 404, 410),
            "patient": (200, 404, 410),
            "auditor": 403,
        },
    ),
    # A preview shows the content: the content's rules (the world's jobs made them).
    ("GET", "/api/v1/documents/{document_id}/preview"): Spec(
        doc("/preview", params={"size": "thumbnail"}),
        {
            "service": (200, 200, 410),
            "admin": 403,
            "clinician": (200, 404, 410),
            "patient": (200, 404, 410),
            "auditor": 403,
        },
    ),
    ("GET", "/api/v1/documents/{document_id}/versions/{number}/preview"): Spec(
        doc("/versions/1/preview"),
        {
            "service": (200, 200, 410),
            "admin": 403,
            "clinician": (200, 404, 410),
            "patient": (200, 404, 410),
            "auditor": 403,
        },
    ),
    ("POST", "/api/v1/documents/{document_id}/download-url"): Spec(
        doc("/download-url", "POST"),
        {
            "service": (201, 201, 410),
            "admin": 403,
            "clinician": (201, 404, 410),
            "patient": (201, 404, 410),
            "auditor": 403,
        },
    ),
    ("DELETE", "/api/v1/documents/{document_id}"): Spec(
        doc("", "DELETE", fresh=True, params={"reason": "matrix"}),
        {
            "service": (200, 200, 409),
            "admin": (200, 200, 409),
            "clinician": (200, 404, 409),
            "patient": 403,
            "patient/ unbound": 404,  # patient/*.* grants delete; it reaches no record
            "auditor": 403,
        },
    ),
    ("POST", "/api/v1/documents/{document_id}/restore"): Spec(
        doc("/restore", "POST", fresh=True),
        {
            "service": (409, 409, 200),
            "admin": (409, 409, 200),
            "clinician": (409, 404, 200),
            "patient": 403,
            "patient/ unbound": 404,  # patient/*.* grants delete; it reaches no record
            "auditor": 403,
        },
    ),
    # Quarantine: admins (and "*" tokens) only; SMART scopes name no such resource.
    # Nothing is infected here, so a permitted decision on a clean version is a 409.
    ("GET", "/api/v1/quarantine"): Spec(fixed("GET", "/api/v1/quarantine"), ONLY_ADMIN),
    ("POST", "/api/v1/quarantine/{document_id}/versions/{number}/release"): Spec(
        quarantine_decision("release"), {**ONLY_ADMIN, "service": 409, "admin": 409}
    ),
    ("POST", "/api/v1/quarantine/{document_id}/versions/{number}/destroy"): Spec(
        quarantine_decision("destroy"), {**ONLY_ADMIN, "service": 409, "admin": 409}
    ),
    # A patient's own export: whoever may read the record's content asks; only they
    # follow it; the download link is its own credential.
    ("POST", "/api/v1/patients/{patient_id}/exports"): Spec(
        export_request,
        {
            "service": 202,
            "admin": 403,
            "clinician": (202, 404, 202),
            "patient": (202, 404, 202),
            "auditor": 403,
        },
    ),
    ("GET", "/api/v1/exports/{export_id}"): Spec(
        export_request,
        {
            "service": 200,
            "admin": 404,
            "clinician": (200, 404, 200),
            "patient": (200, 404, 200),
            "patient/ unbound": 404,
            "auditor": 404,
        },
        build_as=own_export,
    ),
    ("GET", "/api/v1/exports/download/{token}"): Spec(
        export_link, dict.fromkeys(ROLES, 403), public=True
    ),
    # Records governance: vault-wide, so one answer whatever the target; an unknown
    # appraisal is a 404 for those allowed to ask.
    ("GET", "/api/v1/governance/retention-classes"): Spec(
        fixed("GET", "/api/v1/governance/retention-classes"), GOVERN
    ),
    ("POST", "/api/v1/governance/holds"): Spec(place_hold, govern(201)),
    ("GET", "/api/v1/governance/holds"): Spec(fixed("GET", "/api/v1/governance/holds"), GOVERN),
    ("GET", "/api/v1/governance/holds/{hold_id}"): Spec(
        lambda world, target: ("GET", f"/api/v1/governance/holds/{new_hold(world)}", {}), GOVERN
    ),
    ("POST", "/api/v1/governance/holds/{hold_id}/release"): Spec(
        lambda world, target: (
            "POST",
            f"/api/v1/governance/holds/{new_hold(world)}/release",
            {"json": {"reason": "done"}},
        ),
        GOVERN,
    ),
    ("GET", "/api/v1/governance/appraisals"): Spec(
        fixed("GET", "/api/v1/governance/appraisals"), GOVERN
    ),
    ("POST", "/api/v1/governance/appraisals/{appraisal_id}/approve"): Spec(
        fixed(
            "POST",
            f"/api/v1/governance/appraisals/{uuid.uuid4()}/approve",
            json={"reason": "due"},
        ),
        govern(404),
    ),
    ("POST", "/api/v1/governance/appraisals/{appraisal_id}/keep"): Spec(
        fixed(
            "POST",
            f"/api/v1/governance/appraisals/{uuid.uuid4()}/keep",
            json={"reason": "value", "keep_until": "2100-01-01"},
        ),
        govern(404),
    ),
    # Signed links: the link is the credential, whoever presents it.
    ("GET", "/api/v1/download/{token}"): Spec(signed_link, ALL_200, public=True),
    # Sessions.
    ("POST", "/api/v1/auth/token"): Spec(
        fixed(
            "POST",
            "/api/v1/auth/token",
            data={
                "username": "nobody-here",
                "password": "wrong-password-123",
                "grant_type": "password",
            },
        ),
        dict.fromkeys(ROLES, 401),
        public=True,
    ),
    ("POST", "/api/v1/auth/refresh"): Spec(
        fixed("POST", "/api/v1/auth/refresh", json={"refresh_token": "not-a-real-refresh-token"}),
        dict.fromkeys(ROLES, 401),
        public=True,
    ),
    ("GET", "/api/v1/auth/me"): Spec(fixed("GET", "/api/v1/auth/me"), ALL_200),
    ("POST", "/api/v1/auth/logout"): Spec(
        fixed("POST", "/api/v1/auth/logout", own_session=True), dict.fromkeys(ROLES, 204)
    ),
    # Users and care teams: administrators.
    ("POST", "/api/v1/users"): Spec(new_user, admin_only(201)),
    ("GET", "/api/v1/users"): Spec(fixed("GET", "/api/v1/users"), ONLY_ADMIN),
    ("GET", "/api/v1/users/{user_id}"): Spec(user_path(), ONLY_ADMIN),
    ("POST", "/api/v1/users/{user_id}/disable"): Spec(user_path("/disable", "POST"), ONLY_ADMIN),
    ("POST", "/api/v1/users/{user_id}/enable"): Spec(user_path("/enable", "POST"), ONLY_ADMIN),
    ("POST", "/api/v1/care-teams"): Spec(care_team_add, admin_only(201)),
    ("DELETE", "/api/v1/care-teams/{clinician_id}/{patient_id}"): Spec(
        care_team_remove, admin_only(204)
    ),
    ("GET", "/api/v1/care-teams"): Spec(fixed("GET", "/api/v1/care-teams"), ONLY_ADMIN),
    # The audit log: auditors.
    ("GET", "/api/v1/audit/events"): Spec(audit_events_about, ONLY_AUDIT),
    # A patient's access history: the patient, and whole-log readers.
    ("GET", "/api/v1/patients/{patient_id}/access-history"): Spec(
        access_history,
        {
            **ONLY_AUDIT,
            "patient": (200, 404, 200),
            "patient/ token": (200, 404, 200),
            "patient/ unbound": 404,
        },
    ),
    ("GET", "/api/v1/audit/checkpoint"): Spec(fixed("GET", "/api/v1/audit/checkpoint"), ONLY_AUDIT),
    ("GET", "/api/v1/audit/proof/inclusion"): Spec(
        fixed("GET", "/api/v1/audit/proof/inclusion", params={"index": 0, "size": 1}), ONLY_AUDIT
    ),
    ("GET", "/api/v1/audit/proof/consistency"): Spec(
        fixed("GET", "/api/v1/audit/proof/consistency", params={"first": 1, "second": 1}),
        ONLY_AUDIT,
    ),
    # FHIR R4: the same policy as REST, through the same services.
    ("GET", "/fhir/metadata"): Spec(fixed("GET", "/fhir/metadata"), ALL_200, public=True),
    ("POST", "/fhir"): Spec(
        fhir_transaction,
        {
            "service": 200,
            "admin": 403,
            "clinician": (200, 422, 200),
            "patient": (200, 422, 200),
            "auditor": 403,
        },
    ),
    ("GET", "/fhir/DocumentReference"): Spec(
        fixed("GET", "/fhir/DocumentReference"), {**ALL_200, "auditor": 403}
    ),
    ("POST", "/fhir/DocumentReference/_search"): Spec(
        fixed("POST", "/fhir/DocumentReference/_search", data={"_count": "5"}),
        {**ALL_200, "auditor": 403},
    ),
    ("GET", "/fhir/DocumentReference/{resource_id}"): Spec(
        fhir_document(),
        {
            "service": 200,
            "admin": 200,
            "clinician": (200, 404, 200),
            "patient": (200, 404, 200),
            "auditor": 403,
        },
    ),
    ("GET", "/fhir/DocumentReference/{resource_id}/_history/{version_id}"): Spec(
        fhir_vread,
        {
            "service": 200,
            "admin": 200,
            "clinician": (200, 404, 200),
            "patient": (200, 404, 200),
            "auditor": 403,
        },
    ),
    ("POST", "/fhir/DocumentReference"): Spec(
        fhir_create,
        {
            "service": 201,
            "admin": 403,
            "clinician": (201, 422, 201),
            "patient": (201, 422, 201),
            "auditor": 403,
        },
    ),
    ("PUT", "/fhir/DocumentReference/{resource_id}"): Spec(
        fhir_update,
        {
            "service": (200, 200, 409),
            "admin": 403,
            "clinician": (200, 404, 409),
            # Patients change only what they uploaded; these came from the service account.
            "patient": (403, 404, 403),
            "auditor": 403,
        },
    ),
    ("DELETE", "/fhir/DocumentReference/{resource_id}"): Spec(
        fhir_document(method="DELETE", fresh=True),
        {
            "service": 200,
            "admin": 200,
            "clinician": (200, 404, 200),
            "patient": 403,
            "patient/ unbound": 404,  # patient/*.* grants delete; it reaches no record
            "auditor": 403,
        },
    ),
    ("GET", "/fhir/Binary/{resource_id}"): Spec(
        fhir_binary(),
        {
            "service": (200, 200, 410),
            "admin": 403,
            "clinician": (200, 404, 410),
            "patient": (200, 404, 410),
            "auditor": 403,
        },
    ),
    ("GET", "/fhir/Binary/{resource_id}/_history/{version_id}"): Spec(
        fhir_binary("/_history/1"),
        {
            "service": (200, 200, 410),
            "admin": 403,
            "clinician": (200, 404, 410),
            "patient": (200, 404, 410),
            "auditor": 403,
        },
    ),
    ("POST", "/fhir/Binary"): Spec(
        fhir_binary_create,
        {
            "service": 201,
            "admin": 403,
            "clinician": (201, 422, 201),
            "patient": (201, 422, 201),
            "auditor": 403,
        },
    ),
    ("GET", "/fhir/Patient"): Spec(fixed("GET", "/fhir/Patient"), {**ALL_200, "auditor": 403}),
    ("POST", "/fhir/Patient/_search"): Spec(
        fixed("POST", "/fhir/Patient/_search", data={"_count": "5"}),
        {**ALL_200, "auditor": 403},
    ),
    ("GET", "/fhir/Patient/{resource_id}"): Spec(
        fhir_patient,
        {
            "service": (200, 200, 200),
            "admin": (200, 200, 200),
            "clinician": (200, 404, 200),
            "patient": (200, 404, 200),
            "auditor": 403,
        },
    ),
    ("GET", "/fhir/AuditEvent"): Spec(fhir_audit_events_about, AUDIT_SEARCH),
    ("POST", "/fhir/AuditEvent/_search"): Spec(fhir_audit_search_about, AUDIT_SEARCH),
    # FHIR Bulk Data export.
    ("GET", "/fhir/Patient/$export"): Spec(
        fixed("GET", "/fhir/Patient/$export", headers=PREFER), EXPORT_START
    ),
    ("GET", "/fhir/$export"): Spec(
        fixed("GET", "/fhir/$export", headers=PREFER),
        # Only who reaches every patient: not a care team, not a patient/ token.
        {**dict.fromkeys(PRINCIPALS, 403), **dict.fromkeys(("service", "admin"), 202)}
        | dict.fromkeys(("user/ token", "user/ unbound", "system/ token"), 202),
    ),
    ("GET", "/fhir/$export-status/{export_id}"): Spec(
        fixed("GET", "/fhir"), EXPORT_OWNER, build_as=bulk_status("GET")
    ),
    ("DELETE", "/fhir/$export-status/{export_id}"): Spec(
        fixed("DELETE", "/fhir"),
        {role: 202 if status == 200 else status for role, status in EXPORT_OWNER.items()},
        build_as=bulk_status("DELETE"),
    ),
    ("GET", "/fhir/$export-file/{export_id}/{name}"): Spec(
        fixed("GET", "/fhir"),
        # An unbound patient/ token's export is empty: it has no file of its own.
        {**EXPORT_OWNER, "patient/ unbound": 404},
        build_as=bulk_file,
    ),
    ("GET", "/fhir/AuditEvent/{resource_id}"): Spec(
        fhir_audit_event,
        {
            **ONLY_AUDIT,
            "patient": (200, 404, 200),
            "patient/ token": (200, 404, 200),
            "patient/ unbound": 404,
        },
    ),
}


def registered_routes(app: FastAPI) -> set[tuple[str, str]]:
    """Every (method, path) the app answers, including those of included routers.

    The portal's pages use cookie sessions, not bearer tokens; they have a generated
    matrix of their own (tests/web/test_portal_matrix.py).
    """
    found: set[tuple[str, str]] = set()
    for route in app.routes:
        if is_portal_route(route):
            continue
        # FastAPI wraps included routers; their routes are reached through contexts.
        contexts = getattr(route, "effective_route_contexts", None)
        pairs = (
            [(ctx.path, ctx.original_route) for ctx in contexts()]
            if contexts is not None
            else [(getattr(route, "path", ""), route)]
        )
        for path, original in pairs:
            if is_portal_route(original):
                continue
            methods = getattr(original, "methods", None) or set()
            for method in methods:
                # HEAD beside GET is the framework's; a HEAD of its own is a route.
                if method != "HEAD" or "GET" not in methods:
                    found.add((method, path))
    return found


def is_portal_route(route: object) -> bool:
    endpoint = getattr(route, "endpoint", None)
    module = getattr(endpoint, "__module__", "") or ""
    return module.startswith("medvault.web") or getattr(route, "path", "") == "/static"


def test_every_route_has_a_policy_entry(app: FastAPI) -> None:
    routes = registered_routes(app)
    missing = routes - SPECS.keys()
    assert not missing, f"routes without an authorization spec: {sorted(missing)}"
    stale = SPECS.keys() - routes
    assert not stale, f"specs for routes that no longer exist: {sorted(stale)}"


@pytest.fixture
def world(
    app: FastAPI, runtime: Runtime, api_token: str, make_user: UserFactory
) -> Iterator[World]:
    from medvault.audit.sealer import seal_pending

    with TestClient(app, raise_server_exceptions=False) as service:
        service.headers["Authorization"] = f"Bearer {api_token}"
        service.event_hooks["response"] = [validate_response]
        own, foreign = create_patient(service), create_patient(service)
        documents = {
            # Real PDFs, so that their previews and text exist (see run_due_jobs below).
            "own": upload_raw(service, own, text_pdf_bytes("Own letter")).json()["id"],
            "foreign": upload_raw(service, foreign, text_pdf_bytes("Foreign")).json()["id"],
            "deleted": upload_raw(service, own, text_pdf_bytes("Deleted")).json()["id"],
        }
        # Previews and text, so that reading them is allowed or refused by the policy,
        # not missing.
        run_due_jobs(runtime)
        service.delete(f"/api/v1/documents/{documents['deleted']}", params={"reason": "matrix"})
        made = {
            "admin": make_user(Role.ADMIN),
            "clinician": make_user(Role.CLINICIAN),
            "patient": make_user(Role.PATIENT, patient_id=own),
            "auditor": make_user(Role.AUDITOR),
            "scratch": make_user(Role.CLINICIAN),
        }
        put_on_care_team(runtime, clinician_id=made["clinician"].id, patient_id=own)
        tokens = {"service": api_token}
        with runtime.auth.session() as session:
            for name, token in TOKENS.items():
                tokens[name] = create_api_token(
                    session=session,
                    name=name,
                    scopes=token.scopes,
                    user_id=made[token.owner].id if token.owner else None,
                ).token
            session.commit()
        for role in ("admin", "clinician", "patient", "auditor"):
            response = login(service, made[role].username, made[role].password)
            assert response.status_code == 200, response.text
            tokens[role] = response.json()["access_token"]
        seal_pending(runtime=runtime)
        clinician = made["clinician"]
        expired = issue_access_token(
            key=runtime.jwt_key,
            user_id=clinician.id,
            role=Role.CLINICIAN,
            patient_id=None,
            session_id=uuid.uuid4(),
            now=utcnow() - timedelta(hours=2),
            ttl_seconds=900,
        )
        header, _, signature = tokens["clinician"].split(".")
        forged = issue_access_token(
            key=runtime.jwt_key,
            user_id=clinician.id,
            role=Role.ADMIN,
            patient_id=None,
            session_id=uuid.uuid4(),
            now=utcnow(),
            ttl_seconds=900,
        ).split(".")[1]
        yield World(
            service=service,
            patients={"own": own, "foreign": foreign},
            documents=documents,
            tokens=tokens,
            users={role: user.id for role, user in made.items()},
            secret_key=runtime.secret_key,
            expired=expired,
            # A clinician's token with its role claim raised to admin: the signature no
            # longer matches the payload.
            tampered=f"{header}.{forged}.{signature}",
            credentials={role: (u.username, u.password) for role, u in made.items()},
            runtime=runtime,
        )


def expectation(spec: Spec, principal: str) -> int | tuple[int, int, int]:
    """What ``principal`` gets: as the spec says, else as the role its token acts like.

    A token that reaches no patient gets, for every target, what its role gets for a
    foreign record.
    """
    if principal in spec.expect:
        return spec.expect[principal]
    token = TOKENS[principal]
    expected = spec.expect[token.like]
    if token.reach == "none" and isinstance(expected, tuple):
        foreign = expected[1]
        return (foreign, foreign, foreign)  # one answer per target: own, foreign, deleted
    return expected


def expected_cells(spec: Spec, principal: str) -> list[tuple[str, int]]:
    expected = expectation(spec, principal)
    if isinstance(expected, tuple):
        return list(zip(TARGETS, expected, strict=True))
    return [("own", expected)]


def call(client: TestClient, request: Request, token: str | None) -> httpx.Response:
    method, url, kwargs = request
    headers = dict(kwargs.pop("headers", {}))
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    response: httpx.Response = client.request(method, url, headers=headers, **kwargs)
    validate_response(response)  # FHIR answers must be valid R4, whoever asked
    return response


def leaked_ids(world: World, principal: str, response: httpx.Response) -> list[str]:
    """Ids of records outside ``principal``'s reach that a successful answer carries.

    The status alone cannot tell a search scoped to the caller from one that returns
    everyone's rows (the audit-log leak of issue 9 answered 200 either way).
    """
    reach = REACH.get(principal, "all")
    kind = response.headers.get("content-type", "")
    if reach == "all" or response.status_code >= 300 or "json" not in kind:
        return []
    if reach == "own":
        out_of_reach = {world.patients["foreign"], world.documents["foreign"]}
    else:
        out_of_reach = {*world.patients.values(), *world.documents.values()}
    if "ndjson" in kind:  # a bulk export file: one resource per line
        text = response.text
        return sorted(value for value in out_of_reach if value in text)
    body = response.json()
    if isinstance(body, dict) and body.get("resourceType") == "Bundle":
        body = {key: value for key, value in body.items() if key != "link"}  # echoes the query
    text = json.dumps(body)
    return sorted(value for value in out_of_reach if value in text)


@pytest.mark.parametrize("principal", PRINCIPALS)
def test_each_principal_gets_exactly_what_the_policy_says(
    app: FastAPI, world: World, principal: str
) -> None:
    failures = []
    with TestClient(app, raise_server_exceptions=False) as client:
        for (method, path), spec in SPECS.items():
            for target, status in expected_cells(spec, principal):
                token = world.tokens[principal]
                request = spec.request(world, target, token)
                if request[2].pop("own_session", False) and principal in ROLES[1:]:
                    # Logging out must not end the session the other cells use.
                    username, password = world.credentials[principal]
                    token = login(client, username, password).json()["access_token"]
                response = call(client, request, token)
                where = f"{principal:16} {target:8} {method:6} {path}"
                if response.status_code != status:
                    failures.append(f"{where}: {response.status_code}, want {status}")
                elif leaked := leaked_ids(world, principal, response):
                    failures.append(f"{where}: answers with out-of-reach ids {leaked}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("credential", ["none", "expired", "tampered"])
def test_every_protected_route_refuses_a_bad_credential(
    app: FastAPI, world: World, credential: str
) -> None:
    token = {"none": None, "expired": world.expired, "tampered": world.tampered}[credential]
    failures = []
    with TestClient(app, raise_server_exceptions=False) as client:
        for (method, path), spec in SPECS.items():
            if spec.public:
                continue
            request = spec.request(world, "own", token)
            request[2].pop("own_session", None)
            got = call(client, request, token).status_code
            if got != 401:
                failures.append(f"{credential:8} {method:6} {path}: {got}, want 401")
    assert not failures, "\n".join(failures)
