"""Build a patient's export archive, streamed from the vault into the vault.

Layout (format ``medvault.export.v1``; :mod:`medvault.governance.export_verifier`
checks it)::

    README.txt                  what this is and how to check it
    fhir/bundle.json            Patient + one DocumentReference per version (Bundle)
    documents/<doc>/v<n>.<ext>  every version's bytes, current and past
    audit/events.ndjson         every sealed event about the record: its exact leaf
                                bytes, leaf index and RFC 6962 audit path
    audit/checkpoint.txt        the signed checkpoint those paths lead to
    verify_export.py            the standalone verifier
    manifest.json, .sig         every file's size and SHA-256, signed by the audit key

The ZIP's entries are AES-256 encrypted (WinZip AE-2, what 7-Zip, WinRAR and Keka
open) under the requester's passphrase, and the ZIP's bytes go straight into a vault
envelope in the blob store, so neither a document nor the archive is ever plaintext on
disk or in object storage; memory holds one piece of one file at a time. Entry names
are neutral ids: a ZIP's file names are not encrypted, and a document's own file name
often names the patient (the FHIR bundle gives it).

The FHIR resources come from a function the caller passes (``BundleMaker``): the FHIR
mapping lives in the ``fhir`` package, which only the app's wiring may import.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyzipper
from sqlalchemy import select
from sqlalchemy.orm import Session

from medvault.audit.checkpoints import SignedCheckpoint
from medvault.audit.leaf import LEAF_COLUMNS, encode_values
from medvault.audit.merkle_proofs import inclusion_proof
from medvault.audit.models import AuditCheckpoint, AuditEvent
from medvault.audit.repository import StoredNodes
from medvault.crypto.envelope import EnvelopeWriter
from medvault.crypto.keyring import new_dek
from medvault.documents.content import iter_plaintext
from medvault.documents.models import Document, DocumentVersion, ScanState, VersionState
from medvault.governance import export_verifier as fmt
from medvault.kit.clock import utcnow
from medvault.patients.models import Patient
from medvault.runtime import Runtime

EXPORT_BLOB_PREFIX = "exports/"
EVENT_BATCH = 500
_EXTENSIONS = {
    "application/pdf": "pdf",
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/tiff": "tiff",
    "application/dicom": "dcm",
    "text/plain": "txt",
}
# (document, version, its path in the archive) for each version exported.
Exported = tuple[Document, DocumentVersion, str]
BundleMaker = Callable[[Session, Patient, list[Exported]], dict[str, Any]]


def export_key(export_id: uuid.UUID) -> str:
    return f"{EXPORT_BLOB_PREFIX}{export_id}"


class _EnvelopeSink(io.RawIOBase):
    """What the ZIP writes: sealed into the vault's envelope as it arrives, and hashed."""

    def __init__(self, runtime: Runtime, export_id: uuid.UUID) -> None:
        super().__init__()
        dek = new_dek()
        self.wrapped = runtime.current_keyring().wrap_dek(dek, version_id=export_id)
        self._envelope = EnvelopeWriter(
            dek=dek,
            version_id=export_id,
            segment_size=runtime.settings.segment_size,
        )
        self.key = export_key(export_id)
        self._writer = runtime.blobs.writer(self.key)
        self._writer.write(self._envelope.header_bytes())
        self.size = 0
        self.digest = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.size += len(view)
        self.digest.update(view)
        sealed = self._envelope.update_view(view)
        if sealed:
            self._writer.write(sealed)
        return len(view)

    def commit(self) -> None:
        self._writer.write(self._envelope.finalize())
        self._writer.commit()

    def abort(self) -> None:
        self._writer.abort()


@dataclass
class Built:
    storage_key: str
    kek_id: str
    wrapped_dek: bytes
    size: int
    sha256: str
    summary: dict[str, Any] = field(default_factory=dict)


class _Archive:
    """The ZIP being written, and the manifest entry of each file put in it."""

    def __init__(self, zip_file: pyzipper.AESZipFile, created: datetime) -> None:
        self.zip = zip_file
        self.files: list[dict[str, Any]] = []
        self._stamp = created.timetuple()[:6]

    def _info(self, path: str, *, compress: bool) -> pyzipper.ZipInfo:
        # The AES file's own ZipInfo class: it carries the encryption fields.
        info = self.zip.zipinfo_cls(path, date_time=self._stamp)
        info.compress_type = pyzipper.ZIP_DEFLATED if compress else pyzipper.ZIP_STORED
        return info

    def add_stream(self, path: str, pieces: Iterable[bytes], *, compress: bool) -> str:
        digest, size = hashlib.sha256(), 0
        with self.zip.open(self._info(path, compress=compress), "w", force_zip64=True) as out:
            for piece in pieces:
                digest.update(piece)
                size += len(piece)
                out.write(piece)
        self.files.append({"path": path, "size": size, "sha256": digest.hexdigest()})
        return digest.hexdigest()

    def add_bytes(self, path: str, data: bytes, *, listed: bool = True) -> None:
        if listed:
            self.add_stream(path, [data], compress=True)
        else:
            self.zip.writestr(self._info(path, compress=True), data)


def _versions(session: Session, patient_id: uuid.UUID) -> list[tuple[Document, DocumentVersion]]:
    """Every version of every document of the patient, deleted ones too, oldest first."""
    rows = session.execute(
        select(Document, DocumentVersion)
        .join(DocumentVersion, DocumentVersion.document_id == Document.id)
        .where(Document.patient_id == patient_id)
        .order_by(Document.created_at, Document.id, DocumentVersion.version)
    )
    return [(row[0], row[1]) for row in rows]


def _withheld_reason(version: DocumentVersion) -> str | None:
    if version.state == VersionState.DESTROYED:
        return "destroyed"
    if version.scan_state == ScanState.INFECTED:
        return "quarantined-malware"
    if version.state == VersionState.CORRUPT:
        return "corrupt"
    return None


def _event_lines(session: Session, patient_id: uuid.UUID, size: int) -> Iterator[bytes]:
    """One NDJSON line per sealed event about the patient, with its inclusion proof."""
    reader = StoredNodes(session)
    after = -1
    while True:
        rows = session.execute(
            select(AuditEvent.leaf_index, *LEAF_COLUMNS)
            .where(
                AuditEvent.patient_id == patient_id,
                AuditEvent.leaf_index > after,
                AuditEvent.leaf_index < size,
            )
            .order_by(AuditEvent.leaf_index)
            .limit(EVENT_BATCH)
        ).all()
        for row in rows:
            index, values = row[0], list(row[1:])
            path = inclusion_proof(index, size, reader)
            entry = {
                "id": values[0],
                "leaf_index": index,
                "leaf": encode_values(values).decode("utf-8"),
                "audit_path": [base64.b64encode(node).decode() for node in path],
            }
            yield (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
        if len(rows) < EVENT_BATCH:
            return
        after = rows[-1][0]


def _readme(patient_id: uuid.UUID, created: datetime) -> bytes:
    return (
        (
            "Everything medvault holds about patient {pid}, exported {when} UTC.\n\n"
            "fhir/bundle.json      your record as FHIR R4 resources (Patient, DocumentReference)\n"
            "documents/            every version of every document, as stored\n"
            "audit/events.ndjson   every recorded access to your record, with its proof\n"
            "manifest.json         every file's SHA-256, signed by the vault's audit key\n\n"
            "To check that nothing was changed or left out (Python 3 with the packages\n"
            "cryptography and pyzipper):\n\n"
            "    python verify_export.py <this archive>.zip\n"
        )
        .format(pid=patient_id, when=created.strftime("%Y-%m-%d %H:%M"))
        .encode()
    )


def _write_contents(
    runtime: Runtime,
    session: Session,
    archive: _Archive,
    patient: Patient,
    checkpoint: AuditCheckpoint,
    make_bundle: BundleMaker,
) -> dict[str, Any]:
    exported: list[Exported] = []
    withheld: list[dict[str, Any]] = []
    for document, version in _versions(session, patient.id):
        reason = _withheld_reason(version)
        if reason is not None:
            withheld.append(
                {"document_id": str(document.id), "version": version.version, "reason": reason}
            )
            continue
        ext = _EXTENSIONS.get(version.content_type.split(";")[0], "bin")
        path = f"documents/{document.id}/v{version.version}.{ext}"
        pieces = iter_plaintext(runtime, version, 0, max(0, version.size - 1), verify_hash=True)
        archive.add_stream(path, pieces if version.size else [], compress=False)
        exported.append((document, version, path))
    bundle = make_bundle(session, patient, exported)
    archive.add_bytes(fmt.BUNDLE, json.dumps(bundle, ensure_ascii=False, indent=1).encode())
    events = 0

    def counted() -> Iterator[bytes]:
        nonlocal events
        for line in _event_lines(session, patient.id, checkpoint.tree_size):
            events += 1
            yield line

    archive.add_stream(fmt.EVENTS, counted(), compress=True)
    note = SignedCheckpoint.from_row(checkpoint).signed_note()
    archive.add_bytes(fmt.CHECKPOINT, note.encode())
    archive.add_bytes("verify_export.py", Path(fmt.__file__).read_bytes())
    return {
        "documents": len({document.id for document, _, _ in exported}),
        "versions": len(exported),
        "events": events,
        "tree_size": checkpoint.tree_size,
        "withheld": withheld,
    }


def build(
    runtime: Runtime,
    session: Session,
    *,
    export_id: uuid.UUID,
    patient: Patient,
    passphrase: bytes,
    checkpoint: AuditCheckpoint,
    make_bundle: BundleMaker,
) -> Built:
    """Write the archive into the blob store (durable on return); nothing is recorded."""
    created = utcnow()
    sink = _EnvelopeSink(runtime, export_id)
    try:
        with pyzipper.AESZipFile(
            sink, "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES
        ) as zip_file:
            zip_file.setpassword(passphrase)
            zip_file.setencryption(pyzipper.WZ_AES, nbits=256)
            archive = _Archive(zip_file, created)
            archive.add_bytes("README.txt", _readme(patient.id, created))
            summary = _write_contents(runtime, session, archive, patient, checkpoint, make_bundle)
            manifest = {
                "format": fmt.FORMAT,
                "patient_id": str(patient.id),
                "created_at": created.isoformat(),
                "files": archive.files,
                "audit": {
                    "events": summary["events"],
                    "tree_size": checkpoint.tree_size,
                    "key_id": runtime.audit_key.key_id,
                    "public_key_pem": runtime.audit_key.public_pem(),
                },
                "withheld": summary["withheld"],
            }
            manifest_bytes = json.dumps(manifest, ensure_ascii=False, indent=1).encode()
            signature = runtime.audit_key.private_key.sign(fmt.SIGNED_PREFIX + manifest_bytes)
            archive.add_bytes(fmt.MANIFEST, manifest_bytes, listed=False)
            archive.add_bytes(fmt.SIGNATURE, base64.b64encode(signature), listed=False)
        sink.commit()
    except BaseException:
        sink.abort()
        raise
    return Built(
        storage_key=sink.key,
        kek_id=sink.wrapped.kek_id,
        wrapped_dek=sink.wrapped.wrapped,
        size=sink.size,
        sha256=sink.digest.hexdigest(),
        summary=summary,
    )
