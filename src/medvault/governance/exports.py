"""A patient's own export: requested, built by a job, served once, then gone.

* **Request** (the patient, or staff who may read the record's content, on their
  behalf) with a passphrase the requester chooses. The passphrase is sealed at once
  under its own data key (wrapped by the keyring) for the worker, never logged, and
  erased when the archive is built.
* **Build** (``patient-export`` job): ``export_archive.build`` against the latest
  signed audit checkpoint, then the row records the blob in one commit.
* **Download**: the requester's status call gives a signed link, which works once: the
  first request claims it (``ready`` → ``downloaded``) in the transaction that records
  its audit event, before a byte leaves; a second answers 410. An interrupted download
  means asking for a new export.
* **Expiry**: ``MEDVAULT_EXPORT_TTL_SECONDS`` after the request, whatever happened, the
  archive is deleted (periodic ``export-expiry`` job).

Every step is audited against the patient: request, status, download (or a refused
one), build, expiry.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Annotated

import jwt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from medvault.access.denials import Denial, denied
from medvault.access.policy import Permission, reaches_patient, require
from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.audit.models import AuditCheckpoint
from medvault.auth.principal import Principal
from medvault.crypto.keyring import WrappedDek, new_dek
from medvault.documents.content import iter_plaintext
from medvault.governance.export_archive import EXPORT_BLOB_PREFIX, BundleMaker, build
from medvault.governance.models import ExportState, PatientExport
from medvault.kit.clock import utcnow
from medvault.kit.i18n import N_
from medvault.kit.problems import (
    Gone,
    NotFound,
    ServiceUnavailable,
    SignedUrlExpired,
    SignedUrlInvalid,
)
from medvault.kit.text import CleanTextModel
from medvault.patients.models import Patient
from medvault.processing import kinds, queue
from medvault.runtime import Runtime
from medvault.storage.base import discard

MIN_PASSPHRASE = 12
AUDIENCE = "medvault:export"
_NONCE = 12
DOWNLOAD_PATH = "/api/v1/exports/download/"
# Who removes an archive blob the store failed to delete: the row keeps no key, so the
# next expiry run's sweep of unowned blobs finds it.
_SWEEP = "the next export expiry run"


class ExportRequest(CleanTextModel):
    model_config = ConfigDict(extra="forbid")

    passphrase: Annotated[str, StringConstraints(min_length=MIN_PASSPHRASE, max_length=1024)] = (
        Field(
            description="Encrypts the archive (AES-256 ZIP). At least 12 characters: a few "
            "unrelated words. The vault does not keep it: lose it and ask for a new export."
        )
    )


class ExportOut(BaseModel):
    id: uuid.UUID
    patient_id: uuid.UUID
    state: ExportState
    created_at: datetime
    expires_at: datetime
    ready_at: datetime | None = None
    size: int | None = Field(default=None, description="Bytes of the encrypted archive")
    sha256: str | None = Field(default=None, description="SHA-256 of the archive as served")
    summary: dict[str, object] | None = None
    download_url: str | None = Field(
        default=None, description="Works once, until `expires_at`; only in the requester's view"
    )


class ExportGone(Gone):
    slug, title = "export-gone", N_("This export was downloaded already, or has expired")


def _aad(export_id: uuid.UUID) -> bytes:
    return b"medvault/export-passphrase/v1|" + export_id.bytes


def _seal_passphrase(runtime: Runtime, export: PatientExport, passphrase: str) -> None:
    dek = new_dek()
    wrapped = runtime.current_keyring().wrap_dek(dek, version_id=export.id)
    nonce = secrets.token_bytes(_NONCE)
    sealed = AESGCM(dek).encrypt(nonce, passphrase.encode("utf-8"), _aad(export.id))
    export.passphrase_kek_id = wrapped.kek_id
    export.passphrase_wrapped_dek = wrapped.wrapped
    export.sealed_passphrase = nonce + sealed


def _open_passphrase(runtime: Runtime, export: PatientExport) -> bytes:
    assert export.passphrase_kek_id and export.passphrase_wrapped_dek and export.sealed_passphrase
    dek = runtime.unwrap_dek(
        WrappedDek(export.passphrase_kek_id, export.passphrase_wrapped_dek), version_id=export.id
    )
    sealed = export.sealed_passphrase
    return AESGCM(dek).decrypt(sealed[:_NONCE], sealed[_NONCE:], _aad(export.id))


def _forget_passphrase(export: PatientExport) -> None:
    export.passphrase_kek_id = None
    export.passphrase_wrapped_dek = None
    export.sealed_passphrase = None


def to_out(export: PatientExport, download_url: str | None = None) -> ExportOut:
    return ExportOut(
        id=export.id,
        patient_id=export.patient_id,
        state=ExportState(export.state),
        created_at=export.created_at,
        expires_at=export.expires_at,
        ready_at=export.ready_at,
        size=export.size,
        sha256=export.sha256,
        summary=export.summary,
        download_url=download_url,
    )


def _refuse_unreachable(session: Session, principal: Principal, patient_id: uuid.UUID) -> None:
    if not reaches_patient(session, principal, patient_id):
        exists = session.get(Patient, patient_id) is not None
        problem = NotFound(N_("No patient with this id."))
        raise denied(
            problem,
            Denial(principal, "Patient", patient_id, patient_id if exists else None),
        )


def request(
    session: Session,
    runtime: Runtime,
    principal: Principal,
    context: AuditContext,
    patient_id: uuid.UUID,
    body: ExportRequest,
) -> ExportOut:
    """Queue an export of everything held about the patient (its content leaves the vault)."""
    require(principal, Permission.CONTENT_READ)
    _refuse_unreachable(session, principal, patient_id)
    now = utcnow()
    export = PatientExport(
        id=uuid.uuid4(),
        patient_id=patient_id,
        requested_by=principal.actor_id,
        requested_role=principal.role.value,
        state=ExportState.QUEUED.value,
        created_at=now,
        expires_at=now + timedelta(seconds=runtime.settings.export_ttl_seconds),
    )
    _seal_passphrase(runtime, export, body.passphrase)
    session.add(export)
    queue.enqueue(
        session,
        kinds.PATIENT_EXPORT,
        {"export_id": str(export.id)},
        dedupe_key=kinds.export_key(export.id),
        fresh=True,
    )
    session.flush()
    audit.record(
        session=session,
        context=context,
        action="patient.export.request",
        resource_type="PatientExport",
        resource_id=export.id,
        patient_id=patient_id,
    )
    return to_out(export)


def _mine(
    session: Session, principal: Principal, export_id: uuid.UUID, action: str
) -> PatientExport:
    export = session.get(PatientExport, export_id)
    if export is None or export.requested_by != principal.actor_id:
        # Someone else's export is as absent as none; the attempt is audited all the same.
        problem = NotFound(N_("No export with this id."))
        patient = export.patient_id if export is not None else None
        raise denied(problem, Denial(principal, "PatientExport", export_id, patient))
    return export


def sign_link(runtime: Runtime, export: PatientExport) -> str:
    claims = {"sub": str(export.id), "aud": AUDIENCE, "exp": export.expires_at}
    return jwt.encode(claims, runtime.secret_key, algorithm="HS256")


def status(
    session: Session,
    runtime: Runtime,
    principal: Principal,
    context: AuditContext,
    export_id: uuid.UUID,
    *,
    base_url: str,
) -> ExportOut:
    export = _mine(session, principal, export_id, "patient.export.read")
    audit.record(
        session=session,
        context=context,
        action="patient.export.read",
        resource_type="PatientExport",
        resource_id=export.id,
        patient_id=export.patient_id,
        details={"state": export.state},
    )
    link = None
    if export.state == ExportState.READY:
        link = base_url.rstrip("/") + DOWNLOAD_PATH + sign_link(runtime, export)
    return to_out(export, link)


def list_mine(session: Session, principal: Principal, patient_id: uuid.UUID) -> list[ExportOut]:
    """The caller's own exports of this patient, newest first (the portal's list)."""
    rows = session.scalars(
        select(PatientExport)
        .where(
            PatientExport.patient_id == patient_id,
            PatientExport.requested_by == principal.actor_id,
        )
        .order_by(PatientExport.created_at.desc())
        .limit(20)
    )
    return [to_out(row) for row in rows]


def _verify_link(runtime: Runtime, token: str) -> uuid.UUID:
    try:
        claims = jwt.decode(
            token,
            runtime.secret_key,
            algorithms=["HS256"],
            audience=AUDIENCE,
            options={"require": ["exp", "sub"]},
        )
        return uuid.UUID(str(claims["sub"]))
    except jwt.ExpiredSignatureError:
        raise SignedUrlExpired(N_("This export has expired; ask for a new one.")) from None
    except (jwt.PyJWTError, ValueError):
        raise SignedUrlInvalid(N_("The link is malformed or was altered.")) from None


def claim_download(runtime: Runtime, token: str, context: AuditContext) -> PatientExport:
    """Claim the one download (audited, committed) before any byte is served.

    ``context`` is the request's (client address, agent, request id); the link itself
    is the actor, as for a document's signed link.
    """
    export_id = _verify_link(runtime, token)
    with runtime.clinical.session() as session:
        claimed = session.execute(
            update(PatientExport)
            .where(PatientExport.id == export_id, PatientExport.state == ExportState.READY.value)
            .values(state=ExportState.DOWNLOADED.value, downloaded_at=utcnow())
            .execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]
        export = session.get(PatientExport, export_id)
        if export is None:
            raise SignedUrlInvalid(N_("The link is malformed or was altered."))
        audit.record(
            session=session,
            context=AuditContext(
                actor_id=f"export_link:{export.id}",
                actor_role="link",
                client_ip=context.client_ip,
                user_agent=context.user_agent,
                request_id=context.request_id,
            ),
            action="patient.export.download",
            outcome=audit.Outcome.SUCCESS if claimed else audit.Outcome.FAILURE,
            resource_type="PatientExport",
            resource_id=export.id,
            patient_id=export.patient_id,
            details={"requested_by": export.requested_by},
        )
        try:
            session.commit()
        except Exception as exc:
            raise ServiceUnavailable(
                N_("The access could not be recorded in the audit log, so it was refused.")
            ) from exc
        if not claimed:
            raise ExportGone(N_("An export link works once, until it expires."))
        session.refresh(export)
        return export


def archive_bytes(runtime: Runtime, export: PatientExport) -> Iterator[bytes]:
    """The passphrase-encrypted ZIP, decrypted from its vault envelope as it streams."""
    assert export.size is not None
    return iter_plaintext(
        runtime,
        _SealedArchive(export),
        0,
        max(0, export.size - 1),
        verify_hash=True,
    )


class _SealedArchive:
    """A ready export as the content reader's ``Sealed``: what opens its blob."""

    def __init__(self, export: PatientExport) -> None:
        assert export.storage_key and export.kek_id and export.wrapped_dek is not None
        assert export.size is not None and export.sha256 is not None
        self.id = export.id
        self.storage_key = export.storage_key
        self.kek_id = export.kek_id
        self.wrapped_dek = export.wrapped_dek
        self.size = export.size
        self.sha256 = export.sha256


def run(runtime: Runtime, export_id: uuid.UUID, make_bundle: BundleMaker) -> dict[str, object]:
    """The ``patient-export`` job: build against the latest checkpoint, then record it."""
    context = AuditContext.system("patient-export")
    with runtime.clinical.session() as session:
        export = session.get(PatientExport, export_id)
        if export is None or export.state not in (ExportState.QUEUED, ExportState.BUILDING):
            return {"outcome": "skipped"}
        checkpoint = session.scalar(
            select(AuditCheckpoint).order_by(AuditCheckpoint.tree_size.desc()).limit(1)
        )
        if checkpoint is None:
            # The sealer signs one within seconds of the first event; the job retries.
            raise RuntimeError("no signed audit checkpoint yet")
        patient = session.get(Patient, export.patient_id)
        assert patient is not None  # a foreign key with ON DELETE RESTRICT
        try:
            passphrase = _open_passphrase(runtime, export)
        except InvalidTag:
            export.state, export.error = ExportState.FAILED.value, "passphrase-unreadable"
            _forget_passphrase(export)
            session.commit()
            return {"outcome": "failed"}
        built = build(
            runtime,
            session,
            export_id=export.id,
            patient=patient,
            passphrase=passphrase,
            checkpoint=checkpoint,
            make_bundle=make_bundle,
        )
        export.state = ExportState.READY.value
        export.ready_at = utcnow()
        export.storage_key, export.kek_id = built.storage_key, built.kek_id
        export.wrapped_dek, export.size, export.sha256 = built.wrapped_dek, built.size, built.sha256
        export.summary = built.summary
        _forget_passphrase(export)
        audit.record(
            session=session,
            context=context,
            action="patient.export.build",
            resource_type="PatientExport",
            resource_id=export.id,
            patient_id=export.patient_id,
            details={k: v for k, v in built.summary.items() if k != "withheld"},
        )
        session.commit()
    return {"outcome": "ready", "bytes": built.size}


def expire(runtime: Runtime) -> int:
    """Delete archives past their time (and blobs no row owns); returns how many went."""
    now = utcnow()
    expired = 0
    with runtime.clinical.session() as session:
        rows = list(
            session.scalars(
                select(PatientExport).where(
                    PatientExport.expires_at < now,
                    PatientExport.state != ExportState.EXPIRED.value,
                )
            )
        )
        for export in rows:
            if export.storage_key:
                discard(runtime.blobs, [export.storage_key], finisher=_SWEEP)
            export.state = ExportState.EXPIRED.value
            export.storage_key = None
            _forget_passphrase(export)
            audit.record(
                session=session,
                context=AuditContext.system("export-expiry"),
                action="patient.export.expire",
                resource_type="PatientExport",
                resource_id=export.id,
                patient_id=export.patient_id,
            )
            expired += 1
        session.commit()
        owned = set(
            session.scalars(
                select(PatientExport.storage_key).where(PatientExport.storage_key.is_not(None))
            )
        )
    grace = now - timedelta(seconds=runtime.settings.reconcile_grace_seconds)
    for blob in runtime.blobs.list_blobs(EXPORT_BLOB_PREFIX):
        # A build that died after writing its blob: nothing will ever serve it.
        if blob.key not in owned and blob.modified < grace:
            discard(runtime.blobs, [blob.key], finisher=_SWEEP)
    return expired
