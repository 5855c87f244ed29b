"""FHIR's SHA-1 (``Attachment.hash``) as a job after the upload commits.

A second hash over every byte on the upload path cost raw uploads up to 40% of their
throughput (bench/large_files.py), for a value only FHIR clients read. So the upload
enqueues this job in its own transaction (``documents.arrival``), and the job streams
the version through the verified decryption path, hashes it and stores the hash. Until
then the DocumentReference simply has no ``hash``, which R4 allows.

Idempotent: the hash is written only where it is still NULL, so a retry, a second
worker or ``medvault fhir backfill-hashes`` running meanwhile changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import update

from medvault.crypto.errors import CryptoError, IntegrityError
from medvault.documents import repository
from medvault.documents.content import report_corruption
from medvault.documents.models import DocumentVersion, VersionState
from medvault.fhir.backfill import sha1_of
from medvault.processing.queue import SafeJobError
from medvault.runtime import Runtime
from medvault.storage.base import BlobStoreError


def ensure_sha1(runtime: Runtime, version_id: uuid.UUID) -> str | None:
    """The version's SHA-1, computing and storing it first if the job has not yet run.

    None when the version does not exist, is gone, or its bytes cannot be verified.
    """
    with runtime.clinical.read_session() as session:
        version = repository.version_by_id(session, version_id)
    if version is None or version.state != VersionState.AVAILABLE:
        return None
    if version.sha1 is not None:
        return version.sha1
    try:
        digest = sha1_of(runtime, version)
    except IntegrityError as error:
        report_corruption(runtime, version, str(error))
        return None
    except (CryptoError, BlobStoreError):
        return None
    _store(runtime, version_id, digest)
    return digest


def run_sha1_job(runtime: Runtime, payload: Mapping[str, Any]) -> dict[str, str]:
    version_id = uuid.UUID(str(payload["version_id"]))
    with runtime.clinical.read_session() as session:
        version = repository.version_by_id(session, version_id)
    if version is None or version.state != VersionState.AVAILABLE:
        return {"outcome": "gone"}
    if version.sha1 is not None:
        return {"outcome": "present"}
    try:
        digest = sha1_of(runtime, version)
    except IntegrityError as error:
        report_corruption(runtime, version, str(error))
        raise SafeJobError(f"version {version_id} failed its integrity check") from error
    except (CryptoError, BlobStoreError) as error:
        raise SafeJobError(f"version {version_id} could not be read") from error
    _store(runtime, version_id, digest)
    return {"outcome": "hashed"}


def _store(runtime: Runtime, version_id: uuid.UUID, digest: str) -> None:
    with runtime.clinical.session() as session:
        session.execute(
            update(DocumentVersion)
            .where(DocumentVersion.id == version_id, DocumentVersion.sha1.is_(None))
            .values(sha1=digest)
        )
        session.commit()
