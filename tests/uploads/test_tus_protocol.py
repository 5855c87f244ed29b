"""tus 1.0.0 conformance: every extension's headers and answers, and the spec's error
cases, on SQLite + filesystem and on PostgreSQL + S3 (moto over HTTP)."""

from __future__ import annotations

import hashlib
import uuid
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from medvault.audit.models import AuditEvent
from medvault.auth.principal import Role
from medvault.documents.models import Document, DocumentVersion
from medvault.kit.clock import utcnow
from medvault.processing.reconcile import reconcile
from medvault.runtime import Runtime
from medvault.uploads.models import Upload, UploadChunk
from medvault.uploads.staging import UPLOAD_BLOB_PREFIX
from tests.support.factories import create_patient, pdf_bytes, put_on_care_team, upload_raw
from tests.support.users import UserFactory, bearer, login
from tests.uploads.support import (
    PATCH_TYPE,
    TUS,
    checksum,
    create,
    head,
    metadata,
    patch,
    send_in_pieces,
)


def staged_blobs(runtime: Runtime) -> list[str]:
    return [blob.key for blob in runtime.blobs.list_blobs(UPLOAD_BLOB_PREFIX)]


def stored_sha256(client: TestClient, document_id: str) -> str:
    got = client.get(f"/api/v1/documents/{document_id}/content")
    assert got.status_code == 200, got.text
    return hashlib.sha256(got.content).hexdigest()


def test_discovery_names_the_version_extensions_and_algorithms(anon_client: TestClient) -> None:
    answer = anon_client.options("/api/v1/uploads")
    assert answer.status_code == 204
    assert answer.headers["Tus-Version"] == "1.0.0"
    assert set(answer.headers["Tus-Extension"].split(",")) == {
        "creation",
        "creation-with-upload",
        "creation-defer-length",
        "termination",
        "expiration",
        "checksum",
    }
    assert set(answer.headers["Tus-Checksum-Algorithm"].split(",")) >= {"sha1", "sha256"}


def test_creation_head_patch_complete(client: TestClient, runtime: Runtime) -> None:
    patient = create_patient(client)
    data = pdf_bytes(200_000)
    created = create(client, patient, len(data), title="Discharge letter")
    assert created.status_code == 201, created.text
    assert created.headers["Tus-Resumable"] == "1.0.0"
    url = created.headers["Location"]
    assert url.startswith("/api/v1/uploads/")
    assert uuid.UUID(url.rsplit("/", 1)[1]).version == 4  # random: the URL is unguessable
    assert "Upload-Expires" in created.headers

    status = head(client, url)
    assert status.status_code == 200
    assert status.headers["Upload-Offset"] == "0"
    assert status.headers["Upload-Length"] == str(len(data))
    assert status.headers["Cache-Control"] == "no-store"
    assert status.headers["Upload-Metadata"] == created.request.headers["Upload-Metadata"]

    first = patch(client, url, 0, data[:70_000])
    assert first.status_code == 204, first.text
    assert first.headers["Upload-Offset"] == "70000"
    assert "Medvault-Document-Id" not in first.headers
    assert head(client, url).headers["Upload-Offset"] == "70000"

    last = patch(client, url, 70_000, data[70_000:])
    assert last.status_code == 204, last.text
    assert last.headers["Upload-Offset"] == str(len(data))
    document = last.headers["Medvault-Document-Id"]
    assert stored_sha256(client, document) == hashlib.sha256(data).hexdigest()
    assert client.get(f"/api/v1/documents/{document}").json()["title"] == "Discharge letter"
    # Finished: HEAD still answers (with the document), and nothing stays staged.
    finished = head(client, url)
    assert finished.headers["Upload-Offset"] == str(len(data))
    assert finished.headers["Medvault-Document-Id"] == document
    assert staged_blobs(runtime) == []
    # Each request's bytes are audited against the patient; the last ones as the
    # document's creation, like any upload.
    with runtime.clinical.read_session() as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.patient_id == uuid.UUID(patient))
        ).all()
    actions = [event.action for event in events]
    assert actions.count("upload.create") == 1
    assert actions.count("upload.append") == 1
    assert actions.count("document.create") == 1
    # HEAD answers with the upload's metadata (title, file name): audited as a read.
    assert actions.count("upload.status") == 3
    # The final request, retried by a client that lost its answer: the same answer.
    again = patch(client, url, len(data), b"")
    assert again.status_code == 204
    assert again.headers["Medvault-Document-Id"] == document


def test_a_finished_upload_is_like_any_other_document(client: TestClient, runtime: Runtime) -> None:
    patient = create_patient(client)
    data = pdf_bytes(150_000)
    url = create(client, patient, len(data), filename="letter.pdf").headers["Location"]
    document = send_in_pieces(client, url, data, [40_000]).headers["Medvault-Document-Id"]
    single = upload_raw(client, patient, pdf_bytes(150_000), filename="letter.pdf").json()
    resumable = client.get(f"/api/v1/documents/{document}").json()
    same = ("document_type", "classification", "status", "version", "filename", "uploaded_by")
    assert {k: resumable[k] for k in same} == {k: single[k] for k in same}
    assert resumable["content_type"] == single["content_type"] == "application/pdf"
    with runtime.clinical.read_session() as session:
        events = session.scalars(
            select(AuditEvent.action).where(AuditEvent.resource_id == document)
        ).all()
        version = session.scalars(
            select(DocumentVersion).where(DocumentVersion.document_id == uuid.UUID(document))
        ).one()
    assert events.count("document.create") == 1
    assert version.storage_key.startswith("versions/")
    assert version.sha256 == hashlib.sha256(data).hexdigest()


def test_missing_or_other_tus_version_is_412(client: TestClient) -> None:
    patient = create_patient(client)
    url = create(client, patient, 100).headers["Location"]
    for headers in ({}, {"Tus-Resumable": "0.2.2"}):
        refused = client.head(url, headers=headers)
        assert refused.status_code == 412
        assert refused.headers["Tus-Version"] == "1.0.0"
        sent = {**headers, "Upload-Offset": "0", "Content-Type": PATCH_TYPE}
        answer = client.patch(url, headers=sent, content=b"%PDF")
        assert answer.status_code == 412
        assert answer.json()["type"] == "urn:medvault:problem:tus-version-unsupported"
    assert head(client, url).headers["Upload-Offset"] == "0"


def test_wrong_offset_is_409_and_changes_nothing(client: TestClient) -> None:
    patient = create_patient(client)
    data = pdf_bytes(5_000)
    url = create(client, patient, len(data)).headers["Location"]
    assert patch(client, url, 0, data[:1000]).status_code == 204
    for offset in (0, 999, 1001):
        wrong = patch(client, url, offset, data[offset : offset + 10])
        assert wrong.status_code == 409, offset
        assert wrong.headers["Tus-Resumable"] == "1.0.0"
    assert head(client, url).headers["Upload-Offset"] == "1000"


def test_patch_needs_its_media_type_and_offset(client: TestClient) -> None:
    patient = create_patient(client)
    url = create(client, patient, 100).headers["Location"]
    wrong_type = client.patch(
        url,
        headers={**TUS, "Upload-Offset": "0", "Content-Type": "application/pdf"},
        content=b"%PDF-1.7",
    )
    assert wrong_type.status_code == 415
    no_offset = client.patch(url, headers={**TUS, "Content-Type": PATCH_TYPE}, content=b"%PDF")
    assert no_offset.status_code == 400
    bad_offset = patch(client, url, 0, b"%PDF", Upload_Offset="-1")
    assert bad_offset.status_code == 400


@pytest.mark.parametrize("algorithm", ["sha1", "sha256"])
def test_checksum_good_and_bad(client: TestClient, runtime: Runtime, algorithm: str) -> None:
    patient = create_patient(client)
    data = pdf_bytes(3_000_000)
    url = create(client, patient, len(data)).headers["Location"]
    piece = data[:2_500_000]
    good = patch(client, url, 0, piece, Upload_Checksum=checksum(algorithm, piece))
    assert good.status_code == 204
    rest = data[2_500_000:]
    tampered = rest[:-1] + bytes([rest[-1] ^ 1])
    bad = patch(client, url, len(piece), tampered, Upload_Checksum=checksum(algorithm, rest))
    assert bad.status_code == 460
    assert bad.json()["type"] == "urn:medvault:problem:checksum-mismatch"
    # Nothing of the refused request was kept: the offset, the chunks, the store.
    assert head(client, url).headers["Upload-Offset"] == str(len(piece))
    with runtime.clinical.read_session() as session:
        assert session.scalar(select(func.count()).select_from(UploadChunk)) == 1
    assert len(staged_blobs(runtime)) == 1
    done = patch(client, url, len(piece), rest, Upload_Checksum=checksum(algorithm, rest))
    assert done.status_code == 204
    assert stored_sha256(client, done.headers["Medvault-Document-Id"]) == (
        hashlib.sha256(data).hexdigest()
    )


def test_checksum_header_must_be_well_formed(client: TestClient) -> None:
    patient = create_patient(client)
    url = create(client, patient, 100).headers["Location"]
    for value in ("md5 AAAA", "sha256 not-base64!", "sha256 AAAA", "sha256"):
        answer = patch(client, url, 0, b"%PDF-1.7", Upload_Checksum=value)
        assert answer.status_code == 400, value
        assert answer.json()["type"] == "urn:medvault:problem:invalid-upload-header"


def test_too_large_is_refused_at_creation_and_past_the_length(
    client: TestClient, runtime: Runtime
) -> None:
    patient = create_patient(client)
    limit = runtime.settings.max_upload_bytes
    too_large = create(client, patient, limit + 1)
    assert too_large.status_code == 413
    assert too_large.json()["max_bytes"] == limit
    empty = create(client, patient, 0)
    assert empty.status_code == 400
    url = create(client, patient, 1000).headers["Location"]
    past = patch(client, url, 0, pdf_bytes(1001))
    assert past.status_code == 413
    assert head(client, url).headers["Upload-Offset"] == "0"  # nothing kept, still open


def test_creation_refuses_bad_headers_and_fields(client: TestClient) -> None:
    patient = create_patient(client)
    both = create(client, patient, 100, headers={"Upload-Defer-Length": "1"})
    assert both.status_code == 400
    neither = client.post(
        "/api/v1/uploads",
        headers={**TUS, "Upload-Metadata": metadata(patient_id=patient, document_type="x")},
    )
    assert neither.status_code == 400
    garbled = client.post(
        "/api/v1/uploads",
        headers={**TUS, "Upload-Length": "10", "Upload-Metadata": "patient_id !!!"},
    )
    assert garbled.status_code == 400
    no_type = client.post(
        "/api/v1/uploads",
        headers={**TUS, "Upload-Length": "10", "Upload-Metadata": metadata(patient_id=patient)},
    )
    assert no_type.status_code == 422
    unknown_patient = create(client, str(uuid.uuid4()), 100)
    assert unknown_patient.status_code == 422
    assert unknown_patient.json()["type"] == "urn:medvault:problem:unknown-patient"
    bad_hash = create(client, patient, 100, sha256="abc")
    assert bad_hash.status_code == 400
    # The single request's rules for a file name, up front rather than after the bytes.
    control = create(client, patient, 100, filename="scan\x07.pdf")
    assert control.status_code == 422
    too_long = create(client, patient, 100, filename="a" * 1100 + ".pdf")
    assert too_long.status_code == 422


def test_creation_with_upload(client: TestClient) -> None:
    patient = create_patient(client)
    data = pdf_bytes(50_000)
    whole = create(client, patient, len(data), content=data)
    assert whole.status_code == 201, whole.text
    assert whole.headers["Upload-Offset"] == str(len(data))
    document = whole.headers["Medvault-Document-Id"]
    assert stored_sha256(client, document) == hashlib.sha256(data).hexdigest()
    part = create(client, patient, len(data) * 2, content=data[:10_000])
    assert part.headers["Upload-Offset"] == "10000"
    assert "Medvault-Document-Id" not in part.headers


def test_deferred_length(client: TestClient) -> None:
    patient = create_patient(client)
    data = pdf_bytes(120_000)
    created = create(client, patient, None)
    assert created.status_code == 201
    url = created.headers["Location"]
    assert head(client, url).headers["Upload-Defer-Length"] == "1"
    assert patch(client, url, 0, data[:100_000]).status_code == 204
    shrink = patch(client, url, 100_000, b"", Upload_Length="99999")
    assert shrink.status_code == 400
    done = patch(client, url, 100_000, data[100_000:], Upload_Length=str(len(data)))
    assert done.status_code == 204
    assert stored_sha256(client, done.headers["Medvault-Document-Id"]) == (
        hashlib.sha256(data).hexdigest()
    )
    # Declared by a request with no bytes, when every byte is already there.
    url = create(client, patient, None).headers["Location"]
    other = pdf_bytes(30_000)
    assert patch(client, url, 0, other).status_code == 204
    closing = patch(client, url, len(other), b"", Upload_Length=str(len(other)))
    assert closing.status_code == 204
    assert "Medvault-Document-Id" in closing.headers


def test_termination_removes_everything(client: TestClient, runtime: Runtime) -> None:
    patient = create_patient(client)
    data = pdf_bytes(80_000)
    url = create(client, patient, len(data)).headers["Location"]
    assert patch(client, url, 0, data[:50_000]).status_code == 204
    assert staged_blobs(runtime)
    ended = client.delete(url, headers=TUS)
    assert ended.status_code == 204
    assert ended.headers["Tus-Resumable"] == "1.0.0"
    assert head(client, url).status_code == 404
    assert patch(client, url, 50_000, data[50_000:]).status_code == 404
    assert staged_blobs(runtime) == []
    with runtime.clinical.read_session() as session:
        assert session.scalar(select(func.count()).select_from(Upload)) == 0
        actions = session.scalars(select(AuditEvent.action)).all()
    assert "upload.create" in actions and "upload.terminate" in actions


def test_expired_upload_is_410_then_reconciled(client: TestClient, runtime: Runtime) -> None:
    patient = create_patient(client)
    data = pdf_bytes(60_000)
    url = create(client, patient, len(data)).headers["Location"]
    assert patch(client, url, 0, data[:20_000]).status_code == 204
    upload_id = uuid.UUID(url.rsplit("/", 1)[1])
    with runtime.clinical.session() as session:
        past = utcnow() - timedelta(seconds=1)
        session.execute(update(Upload).where(Upload.id == upload_id).values(expires_at=past))
        session.commit()
    assert head(client, url).status_code == 410
    gone = patch(client, url, 20_000, data[20_000:])
    assert gone.status_code == 410
    assert gone.json()["type"] == "urn:medvault:problem:upload-gone"
    report = reconcile(runtime, grace_seconds=3600)
    assert report.expired_uploads == 1
    assert staged_blobs(runtime) == []
    assert head(client, url).status_code == 404
    with runtime.clinical.read_session() as session:
        expired = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "upload.expire")
        ).one()
    assert expired.patient_id == uuid.UUID(patient)


def test_every_request_moves_the_expiry(client: TestClient) -> None:
    patient = create_patient(client)
    data = pdf_bytes(30_000)
    url = create(client, patient, len(data)).headers["Location"]
    before = head(client, url).headers["Upload-Expires"]
    after = patch(client, url, 0, data[:10]).headers["Upload-Expires"]
    assert after >= before  # RFC 9110 dates of the same day sort as text


def test_a_file_type_not_accepted_refuses_the_upload(client: TestClient, runtime: Runtime) -> None:
    patient = create_patient(client)
    text = b"just some plain text that is not a document type the vault accepts\n" * 100
    url = create(client, patient, len(text)).headers["Location"]
    # The type is decided once its first bytes are there, even across requests.
    assert patch(client, url, 0, text[:100]).status_code == 204
    refused = patch(client, url, 100, text[100:1000])
    assert refused.status_code == 415
    assert head(client, url).status_code == 410
    assert staged_blobs(runtime) == []


def test_duplicates_follow_the_single_request_rule(client: TestClient) -> None:
    patient = create_patient(client)
    data = pdf_bytes(40_000)
    first = create(client, patient, len(data), content=data).headers["Medvault-Document-Id"]
    url = create(client, patient, len(data)).headers["Location"]
    duplicate = patch(client, url, 0, data)
    assert duplicate.status_code == 409
    assert duplicate.json()["existing_document_id"] == first
    assert head(client, url).status_code == 410
    as_version = create(client, patient, len(data), content=data, on_duplicate="new_version")
    assert as_version.headers["Medvault-Document-Id"] == first
    assert client.get(f"/api/v1/documents/{first}").json()["version"] == 2


def test_new_version_of_a_named_document(client: TestClient) -> None:
    patient = create_patient(client)
    document = upload_raw(client, patient, pdf_bytes()).json()["id"]
    data = pdf_bytes(20_000)
    sent = {
        **TUS,
        "Upload-Length": str(len(data)),
        "Upload-Metadata": metadata(document_id=document, filename="v2.pdf"),
        "Content-Type": PATCH_TYPE,
    }
    created = client.post("/api/v1/uploads", headers=sent, content=data)
    assert created.status_code == 201, created.text
    assert created.headers["Medvault-Document-Id"] == document
    assert client.get(f"/api/v1/documents/{document}").json()["version"] == 2
    assert stored_sha256(client, document) == hashlib.sha256(data).hexdigest()


def test_declared_whole_file_sha256_is_checked(client: TestClient, runtime: Runtime) -> None:
    patient = create_patient(client)
    data = pdf_bytes(30_000)
    right = hashlib.sha256(data).hexdigest()
    ok = create(client, patient, len(data), content=data, sha256=right)
    assert ok.headers["Medvault-Document-Id"]
    other = pdf_bytes(30_000)
    url = create(client, patient, len(other), sha256=right).headers["Location"]
    mismatch = patch(client, url, 0, other)
    assert mismatch.status_code == 460
    assert head(client, url).status_code == 410
    with runtime.clinical.read_session() as session:
        stored = session.scalar(select(func.count()).select_from(Document))
    assert stored == 1


def test_an_upload_is_its_creators_alone(
    client: TestClient, runtime: Runtime, make_user: UserFactory
) -> None:
    patient = create_patient(client)
    clinician = make_user(Role.CLINICIAN)
    put_on_care_team(runtime, clinician_id=clinician.id, patient_id=patient)
    token = login(client, clinician.username, clinician.password).json()["access_token"]
    data = pdf_bytes(10_000)
    url = create(client, patient, len(data)).headers["Location"]  # the service account's
    stranger = {**TUS, **bearer(token)}
    assert client.head(url, headers=stranger).status_code == 404
    refused = client.patch(
        url,
        headers={**stranger, "Upload-Offset": "0", "Content-Type": PATCH_TYPE},
        content=data,
    )
    assert refused.status_code == 404
    assert client.delete(url, headers=stranger).status_code == 404
    assert head(client, url).headers["Upload-Offset"] == "0"
    with runtime.clinical.read_session() as session:
        denials = session.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "access.denied", AuditEvent.resource_type == "Upload"
            )
        ).all()
    assert len(denials) == 3
    assert {event.patient_id for event in denials} == {uuid.UUID(patient)}
    # A made-up id is a plain 404 too, with nothing to tell the two apart.
    assert client.head(f"/api/v1/uploads/{uuid.uuid4()}", headers=stranger).status_code == 404


def test_leaving_the_care_team_stops_the_next_request(
    client: TestClient, runtime: Runtime, make_user: UserFactory
) -> None:
    patient = create_patient(client)
    clinician = make_user(Role.CLINICIAN)
    put_on_care_team(runtime, clinician_id=clinician.id, patient_id=patient)
    token = login(client, clinician.username, clinician.password).json()["access_token"]
    data = pdf_bytes(10_000)
    own = {**TUS, **bearer(token), "Upload-Length": str(len(data))}
    own["Upload-Metadata"] = metadata(patient_id=patient, document_type="11502-2")
    url = client.post("/api/v1/uploads", headers=own).headers["Location"]
    sent = {**TUS, **bearer(token), "Upload-Offset": "0", "Content-Type": PATCH_TYPE}
    assert client.patch(url, headers=sent, content=data[:5000]).status_code == 204
    removed = client.delete(f"/api/v1/care-teams/{clinician.id}/{patient}")
    assert removed.status_code == 204
    sent["Upload-Offset"] = "5000"
    refused = client.patch(url, headers=sent, content=data[5000:])
    assert refused.status_code == 422
    assert refused.json()["type"] == "urn:medvault:problem:unknown-patient"


def test_a_failed_completion_leaves_the_last_bytes_to_send_again(
    client: TestClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upload reaches its length only with its document: a completion that fails
    for a passing reason leaves the offset where the last request started, so a tus
    client's retry (HEAD, then PATCH) sends those bytes again and completes."""
    from medvault.documents import upload as single_upload
    from medvault.kit.problems import ServiceUnavailable

    patient = create_patient(client)
    data = pdf_bytes(90_000)
    url = create(client, patient, len(data)).headers["Location"]
    assert patch(client, url, 0, data[:60_000]).status_code == 204
    real = single_upload.upload

    async def unavailable(**kwargs: object) -> object:
        raise ServiceUnavailable("The database restarted.")

    monkeypatch.setattr(single_upload, "upload", unavailable)
    failed = patch(client, url, 60_000, data[60_000:])
    assert failed.status_code == 503
    assert head(client, url).headers["Upload-Offset"] == "60000"
    assert len(staged_blobs(runtime)) == 1  # the final request's chunk is gone
    monkeypatch.setattr(single_upload, "upload", real)
    done = patch(client, url, 60_000, data[60_000:])
    assert done.status_code == 204
    assert stored_sha256(client, done.headers["Medvault-Document-Id"]) == (
        hashlib.sha256(data).hexdigest()
    )
    assert staged_blobs(runtime) == []
