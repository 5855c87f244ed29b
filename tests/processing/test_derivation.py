"""Previews and extracted text, end to end on each backend: upload, the worker's jobs in
their confined child, the encrypted artifacts, the preview routes and what is stored.

Runs on SQLite + filesystem and PostgreSQL + S3, with the real child process (pypdfium2,
Pillow, Tesseract where a test needs OCR).
"""

from __future__ import annotations

import io
import shutil
import uuid
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import MetaData, select

from medvault.documents import derived
from medvault.documents.models import DocumentVersion, VersionDerivative
from medvault.documents.rotation import rotate_keys
from medvault.kit.clock import utcnow
from medvault.processing import derivation, kinds
from medvault.processing.derive import ExtractedText
from medvault.processing.models import Job
from medvault.processing.reconcile import reconcile
from medvault.runtime import Runtime
from medvault.search import index as search_index
from tests.processing import derive_samples as samples
from tests.processing.derive_samples import png_header_only
from tests.search.support import search
from tests.support.factories import create_patient, dicom_bytes, text_pdf_bytes, upload_raw
from tests.support.inspect import audit_events
from tests.support.jobs import run_due_jobs
from tests.support.services import unavailable

MARKER = "Zyxquorbalid"  # a word that appears nowhere but in the test documents


def _version(runtime: Runtime, document_id: str) -> DocumentVersion:
    with runtime.clinical.read_session() as session:
        return session.scalars(
            select(DocumentVersion).where(DocumentVersion.document_id == uuid.UUID(document_id))
        ).one()


def _upload_and_derive(client: TestClient, runtime: Runtime, content: bytes) -> str:
    patient = create_patient(client)
    document = str(upload_raw(client, patient, content).json()["id"])
    run_due_jobs(runtime)
    return document


def test_a_pdf_gets_an_encrypted_preview_and_text(client: TestClient, runtime: Runtime) -> None:
    document = _upload_and_derive(client, runtime, text_pdf_bytes(f"Echo report {MARKER}"))

    meta = client.get(f"/api/v1/documents/{document}").json()
    assert meta["derived"]["preview"] == "ready"
    assert meta["derived"]["text"] == "ready"
    assert meta["derived"]["text_source"] == "text-layer"

    for size, bound in (("thumbnail", 200), ("page", 1200)):
        response = client.get(f"/api/v1/documents/{document}/preview", params={"size": size})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/webp"
        assert response.headers["cache-control"] == "private, no-store"
        image = Image.open(io.BytesIO(response.content))
        assert image.format == "WEBP"
        assert max(image.size) <= bound
    # The version route serves the same picture.
    again = client.get(f"/api/v1/documents/{document}/versions/1/preview", params={"size": "page"})
    assert again.status_code == 200
    assert (
        again.headers["etag"] == client.get(f"/api/v1/documents/{document}/preview").headers["etag"]
    )

    version = _version(runtime, document)
    text = derived.read_text(runtime, version.id)
    assert text is not None and MARKER in text
    # Every read of a picture is on record, against the document and its patient.
    events = audit_events(runtime, "document.preview.read", outcome="success")
    assert len(events) == 4  # two sizes, the version route, and the ETag comparison
    assert {event.resource_id for event in events} == {document}


def test_nothing_derived_is_stored_in_plaintext(client: TestClient, runtime: Runtime) -> None:
    _upload_and_derive(client, runtime, text_pdf_bytes(f"Discharge letter {MARKER}"))
    needles = (MARKER.encode(), MARKER.lower().encode(), MARKER.upper().encode())
    # The blob store: versions and derived artifacts alike are ciphertext.
    with runtime.clinical.read_session() as session:
        kinds_stored = set(session.scalars(select(VersionDerivative.kind)))
    assert kinds_stored == {"thumbnail", "preview", "text"}
    for blob in runtime.blobs.list_blobs():
        raw = b"".join(runtime.blobs.read(blob.key))
        assert not any(needle in raw for needle in needles), blob.key
    # The database: every table but the search index, which README says what it holds.
    metadata = MetaData()
    metadata.reflect(runtime.clinical.engine)
    with runtime.clinical.engine.connect() as connection:
        for table in metadata.sorted_tables:
            if table.name.startswith("search"):
                continue
            for row in connection.execute(table.select()):
                for value in row:
                    if isinstance(value, bytes | str):
                        raw = value.encode() if isinstance(value, str) else value
                        assert not any(needle in raw for needle in needles), table.name


def test_a_hostile_image_fails_cleanly_and_the_worker_goes_on(
    client: TestClient, runtime: Runtime
) -> None:
    patient = create_patient(client)
    bomb = str(upload_raw(client, patient, png_header_only(40_000, 40_000)).json()["id"])
    good = str(upload_raw(client, patient, text_pdf_bytes("After the bomb")).json()["id"])
    run_due_jobs(runtime)

    bad_meta = client.get(f"/api/v1/documents/{bomb}").json()["derived"]
    assert bad_meta["preview"] == "failed"
    assert bad_meta["preview_reason"] == "too-many-pixels"
    refused = client.get(f"/api/v1/documents/{bomb}/preview")
    assert refused.status_code == 404
    assert refused.json()["type"].endswith(":preview-unavailable")
    assert refused.json()["reason"] == "too-many-pixels"
    # The attempt is audited too, as a failure.
    assert audit_events(runtime, "document.preview.read", outcome="failure")
    assert client.get(f"/api/v1/documents/{good}").json()["derived"]["preview"] == "ready"


def test_a_type_without_previews_is_marked_unsupported(
    client: TestClient, runtime: Runtime
) -> None:
    document = _upload_and_derive(client, runtime, dicom_bytes())
    meta = client.get(f"/api/v1/documents/{document}").json()["derived"]
    assert meta["preview"] == "unsupported"
    assert meta["text"] == "unsupported"
    assert client.get(f"/api/v1/documents/{document}/preview").status_code == 404


def test_key_rotation_rewraps_derived_keys(client: TestClient, runtime: Runtime) -> None:
    document = _upload_and_derive(client, runtime, text_pdf_bytes(MARKER))
    before = client.get(f"/api/v1/documents/{document}/preview").content
    result = rotate_keys(runtime=runtime)
    with runtime.clinical.read_session() as session:
        keks = set(session.scalars(select(VersionDerivative.kek_id)))
    assert keks == {result.active_kek_id}
    # Versions and their three artifacts.
    assert result.rewrapped == 4
    assert client.get(f"/api/v1/documents/{document}/preview").content == before


def test_the_reconciler_removes_orphan_derived_blobs_only(
    client: TestClient, runtime: Runtime
) -> None:
    _upload_and_derive(client, runtime, text_pdf_bytes(MARKER))
    orphan = derived.seal(runtime, b"left behind by a crash between blob and row")
    with runtime.clinical.read_session() as session:
        kept = set(session.scalars(select(VersionDerivative.storage_key)))
    young = reconcile(runtime, grace_seconds=3600)
    assert young.orphan_blobs == 0 and young.young_orphans >= 1
    assert runtime.blobs.exists(orphan.storage_key)
    # Past the grace period (a negative grace puts the cutoff in the future).
    report = reconcile(runtime, grace_seconds=-60)
    assert report.orphan_blobs >= 1
    assert not runtime.blobs.exists(orphan.storage_key)
    assert all(runtime.blobs.exists(key) for key in kept)


def test_backfill_queues_versions_stored_before_previews(
    client: TestClient, runtime: Runtime
) -> None:
    patient = create_patient(client)
    document = str(upload_raw(client, patient, text_pdf_bytes(MARKER)).json()["id"])
    # As if stored before this existed: no jobs, state "none".
    with runtime.clinical.session() as session:
        for job in session.scalars(select(Job).where(Job.kind.in_([kinds.PREVIEW, kinds.TEXT]))):
            session.delete(job)
        row = session.scalars(select(DocumentVersion)).one()
        row.preview_state = row.text_state = "none"
        session.commit()
    run_due_jobs(runtime)
    assert client.get(f"/api/v1/documents/{document}").json()["derived"]["preview"] == "none"

    from medvault.processing.derivation_cli import queue_for_current_versions

    assert queue_for_current_versions(runtime, preview=True, text=False, retry_failed=False) == 1
    run_due_jobs(runtime)
    meta = client.get(f"/api/v1/documents/{document}").json()["derived"]
    assert meta["preview"] == "ready"
    assert meta["text"] == "none"


def test_a_version_deleted_while_its_job_waits_gets_nothing(
    client: TestClient, runtime: Runtime
) -> None:
    patient = create_patient(client)
    document = str(upload_raw(client, patient, text_pdf_bytes(MARKER)).json()["id"])
    with runtime.clinical.session() as session:
        row = session.scalars(select(DocumentVersion)).one()
        row.state = "destroyed"
        session.commit()
    run_due_jobs(runtime)
    with runtime.clinical.read_session() as session:
        assert session.scalars(select(VersionDerivative)).first() is None
    assert not any(blob.key.startswith("derived/") for blob in runtime.blobs.list_blobs())
    assert client.get(f"/api/v1/documents/{document}/preview").status_code == 410


def test_deadline_refuses_stale_artifacts(runtime: Runtime) -> None:
    from medvault.processing.derivation import check_deadline
    from medvault.processing.queue import SafeJobError

    sealed = derived.seal(runtime, b"x")
    stale = derived.SealedArtifact(
        **{**sealed.__dict__, "started_at": utcnow() - timedelta(days=30)}
    )
    with pytest.raises(SafeJobError):
        check_deadline(runtime, stale)
    check_deadline(runtime, sealed)


@pytest.mark.parametrize("size", ["huge", ""])
def test_a_bad_size_is_a_clean_422(client: TestClient, runtime: Runtime, size: str) -> None:
    document = _upload_and_derive(client, runtime, text_pdf_bytes(MARKER))
    response = client.get(f"/api/v1/documents/{document}/preview", params={"size": size})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")


def test_text_extracted_again_replaces_its_words_without_a_rebuild(
    client: TestClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    document = _upload_and_derive(client, runtime, text_pdf_bytes(f"{MARKER} first reading"))
    assert search(client, MARKER) == [document]
    # A newer extractor (or OCR language pack) reads the same version differently.
    newer = "Qwelmorantix second reading"
    monkeypatch.setattr(
        derivation,
        "extract_text",
        lambda *_args: ExtractedText(newer, "text-layer", 1, 1, truncated=False),
    )

    def no_rebuild(*_args: object, **_kwargs: object) -> int:
        raise AssertionError("the old words should be withdrawn, not the index rebuilt")

    # SQLite's FTS5 needs the old text to remove its tokens: the job hands it over
    # before the old artifact goes, so no full rebuild is needed.
    monkeypatch.setattr(search_index, "_rebuild_fts", no_rebuild)
    outcome = derivation.run_text_job(runtime, {"version_id": str(_version(runtime, document).id)})
    assert outcome["outcome"] == "ready"
    run_due_jobs(runtime)
    assert search(client, MARKER) == []
    assert search(client, "qwelmorantix") == [document]
    with runtime.clinical.read_session() as session:
        texts = session.scalars(
            select(VersionDerivative).where(VersionDerivative.kind == "text")
        ).all()
    assert len(texts) == 1  # the first reading's artifact was replaced, not kept


def test_scanned_uploads_are_found_by_their_words_through_ocr(
    client: TestClient, runtime: Runtime
) -> None:
    if shutil.which("tesseract") is None:
        unavailable("tesseract is not installed (apt-get install tesseract-ocr tesseract-ocr-eng)")
    patient = create_patient(client)
    picture = upload_raw(
        client,
        patient,
        samples.png(samples.words_image()),
        filename="scan.png",
        content_type="image/png",
        title="Photographed letter",
    ).json()["id"]
    scanned = upload_raw(
        client,
        patient,
        samples.image_pdf(samples.words_image()),
        filename="scan.pdf",
        title="Scanned letter",
    ).json()["id"]
    run_due_jobs(runtime)
    for document in (picture, scanned):
        derived_state = client.get(f"/api/v1/documents/{document}").json()["derived"]
        assert (derived_state["text"], derived_state["text_source"]) == ("ready", "ocr")
    # Words only in the pictures' pixels (not in titles or file names) find both.
    assert set(search(client, "zebracorn")) == {picture, scanned}
    assert set(search(client, '"quokka"')) == {picture, scanned}
    page = client.get("/api/v1/documents", params={"q": "zebracorn"}).json()
    assert all(
        any(s["match"] and s["text"].lower() == "zebracorn" for s in item["snippet"])
        for item in page["items"]
    )
