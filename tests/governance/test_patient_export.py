"""A patient's own export: built as a job, served once, verified offline; tampering is
named; another patient's data never appears. SQLite + filesystem and PostgreSQL + S3."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pyzipper
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import update

from medvault.audit.sealer import seal_pending
from medvault.auth.principal import Role
from medvault.governance import exports
from medvault.governance.export_verifier import verify
from medvault.governance.models import PatientExport
from medvault.kit.clock import utcnow
from medvault.kit.problems import PROBLEM_TYPE_BASE
from medvault.runtime import Runtime
from tests.support.factories import create_patient, put_on_care_team, text_pdf_bytes
from tests.support.inspect import audit_events
from tests.support.jobs import run_due_jobs
from tests.support.users import UserFactory, bearer, login

PASSPHRASE = "violet anchor river seventeen"
TEXT_OTHER = "Ottoline"  # the other patient's family name: never in this patient's export


@dataclass
class Record:
    patient_id: str
    other_id: str
    other_document: str
    uploads: dict[tuple[str, int], bytes]
    token: str


def _record(client: TestClient, runtime: Runtime, make_user: UserFactory) -> Record:
    patient = create_patient(client, family_name="Exportson")
    other = create_patient(client, family_name=TEXT_OTHER)
    uploads: dict[tuple[str, int], bytes] = {}

    def upload(patient_id: str, content: bytes, **params: str) -> str:
        response = client.post(
            "/api/v1/documents",
            params={"patient_id": patient_id, "document_type": "11506-3", **params},
            content=content,
            headers={"content-type": "application/pdf"},
        )
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    first_bytes = text_pdf_bytes("Clinic letter")
    first = upload(patient, first_bytes, title="Clinic letter", filename="exportson-letter.pdf")
    uploads[(first, 1)] = first_bytes
    second_bytes = text_pdf_bytes("Clinic letter, corrected")
    again = client.post(
        f"/api/v1/documents/{first}/versions",
        params={"filename": "exportson-letter-2.pdf"},
        content=second_bytes,
        headers={"content-type": "application/pdf"},
    )
    assert again.status_code == 201
    uploads[(first, 2)] = second_bytes
    deleted_bytes = text_pdf_bytes("Withdrawn referral")
    deleted = upload(patient, deleted_bytes, title="Referral")
    client.delete(f"/api/v1/documents/{deleted}", params={"reason": "sent in error"})
    uploads[(deleted, 1)] = deleted_bytes  # deleted, but still held: it is exported
    other_document = upload(other, text_pdf_bytes(f"{TEXT_OTHER} results"), title=TEXT_OTHER)
    client.get(f"/api/v1/documents/{first}/content")  # an access, audited
    run_due_jobs(runtime)
    user = make_user(Role.PATIENT, patient_id=patient)
    token = login(client, user.username, user.password).json()["access_token"]
    return Record(patient, other, other_document, uploads, token)


def _export(client: TestClient, runtime: Runtime, record: Record, tmp_path: Path) -> Path:
    requested = client.post(
        f"/api/v1/patients/{record.patient_id}/exports",
        json={"passphrase": PASSPHRASE},
        headers=bearer(record.token),
    )
    assert requested.status_code == 202, requested.text
    assert requested.json()["state"] == "queued"
    seal_pending(runtime=runtime)  # the checkpoint the archive proves against
    run_due_jobs(runtime)
    status = client.get(requested.headers["location"], headers=bearer(record.token))
    assert status.status_code == 200, status.text
    body = status.json()
    assert body["state"] == "ready" and body["download_url"], body
    url = body["download_url"].split("://", 1)[1].split("/", 1)[1]
    with TestClient(client.app) as anonymous:
        first = anonymous.get(f"/{url}")
        assert first.status_code == 200, first.text
        assert first.headers["content-type"] == "application/zip"
        assert len(first.content) == body["size"]
        again = anonymous.get(f"/{url}")
        assert again.status_code == 410
        assert again.json()["type"] == PROBLEM_TYPE_BASE + "export-gone"
    path = tmp_path / "export.zip"
    path.write_bytes(first.content)
    return path


def _entries(path: Path) -> dict[str, bytes]:
    with pyzipper.AESZipFile(path) as archive:
        archive.setpassword(PASSPHRASE.encode())
        return {name: archive.read(name) for name in archive.namelist()}


def _rewrite(path: Path, entries: dict[str, bytes]) -> Path:
    out = path.with_name("tampered.zip")
    with pyzipper.AESZipFile(
        out, "w", compression=pyzipper.ZIP_DEFLATED, encryption=pyzipper.WZ_AES
    ) as archive:
        archive.setpassword(PASSPHRASE.encode())
        for name, data in entries.items():
            archive.writestr(name, data)
    return out


def test_the_export_holds_everything_verifies_offline_and_nothing_of_anyone_else(
    client: TestClient, runtime: Runtime, make_user: UserFactory, tmp_path: Path
) -> None:
    record = _record(client, runtime, make_user)
    path = _export(client, runtime, record, tmp_path)

    report = verify(path, PASSPHRASE)
    assert report.ok, report.problems
    entries = _entries(path)
    # Every version of every document, current and past, deleted ones too.
    files = {name: data for name, data in entries.items() if name.startswith("documents/")}
    assert sorted(files.values()) == sorted(record.uploads.values())
    bundle = json.loads(entries["fhir/bundle.json"])
    kinds = [entry["resource"]["resourceType"] for entry in bundle["entry"]]
    assert kinds.count("Patient") == 1 and kinds.count("DocumentReference") == 3
    # The audit trail about the record, each event with its proof.
    events = [json.loads(line) for line in entries["audit/events.ndjson"].splitlines()]
    actions = {json.loads(event["leaf"])[5] for event in events}
    assert {"document.create", "document.content.read", "document.delete"} <= actions
    assert all(json.loads(e["leaf"])[8] == record.patient_id for e in events)
    # Nothing of the other patient, in any file.
    for name, data in entries.items():
        for needle in (record.other_id, record.other_document, TEXT_OTHER):
            assert needle.encode() not in data, (name, needle)
    # The stored archive is ciphertext: no ZIP structure, no names readable in the store.
    with runtime.clinical.session() as session:
        row = session.query(PatientExport).one()
        key = row.storage_key
    assert key is not None
    stored = b"".join(runtime.blobs.read(key))
    assert b"manifest.json" not in stored and b"PK\x03\x04" not in stored[:64]
    # Every step is in the audit log, against the patient.
    for action in ("patient.export.request", "patient.export.build", "patient.export.download"):
        found = audit_events(runtime, action)
        assert found and str(found[0].patient_id) == record.patient_id, action
    refused = audit_events(runtime, "patient.export.download", outcome="failure")
    assert len(refused) == 1  # the second download
    # The passphrase is gone from the database once the archive is built.
    with runtime.clinical.session() as session:
        row = session.query(PatientExport).one()
        assert row.sealed_passphrase is None and row.passphrase_wrapped_dek is None


def test_tampering_or_a_removed_event_is_named(
    client: TestClient, runtime: Runtime, make_user: UserFactory, tmp_path: Path
) -> None:
    record = _record(client, runtime, make_user)
    path = _export(client, runtime, record, tmp_path)
    entries = _entries(path)
    document = next(name for name in entries if name.startswith("documents/"))

    altered = dict(entries)
    altered[document] = entries[document] + b"%"
    report = verify(_rewrite(path, altered), PASSPHRASE)
    assert not report.ok
    assert any(problem.startswith(f"{document}: its SHA-256") for problem in report.problems)

    # An audit event removed, and the manifest's hash of the file updated to match.
    lines = entries["audit/events.ndjson"].splitlines(keepends=True)
    assert len(lines) >= 3
    fewer = b"".join(lines[:1] + lines[2:])
    manifest = json.loads(entries["manifest.json"])
    for item in manifest["files"]:
        if item["path"] == "audit/events.ndjson":
            item["sha256"], item["size"] = hashlib.sha256(fewer).hexdigest(), len(fewer)
    removed = {
        **entries,
        "audit/events.ndjson": fewer,
        "manifest.json": json.dumps(manifest).encode(),
    }
    report = verify(_rewrite(path, removed), PASSPHRASE)
    assert "manifest.json: the signature does not verify (altered, or not the vault's)" in (
        report.problems
    )
    assert any("one removed?" in problem for problem in report.problems)

    # A forged leaf (an event's words changed) fails its inclusion proof.
    forged_line = json.loads(lines[0])
    forged_line["leaf"] = forged_line["leaf"].replace("success", "denied")
    forged = {
        **entries,
        "audit/events.ndjson": (json.dumps(forged_line) + "\n").encode() + b"".join(lines[1:]),
    }
    report = verify(_rewrite(path, forged), PASSPHRASE)
    assert any("not in the signed log" in problem for problem in report.problems)

    assert not verify(path, "not the passphrase at all").ok


def test_the_verifier_runs_alone_from_the_archive_and_as_the_cli(
    client: TestClient, runtime: Runtime, make_user: UserFactory, tmp_path: Path
) -> None:
    record = _record(client, runtime, make_user)
    path = _export(client, runtime, record, tmp_path)
    script = _entries(path)["verify_export.py"]
    imported = {
        alias.name if isinstance(node, ast.Import) else str(node.module)
        for node in ast.walk(ast.parse(script))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported and not any(name.startswith("medvault") for name in imported), imported
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "verify_export.py").write_bytes(script)
    secret = alone / "passphrase.txt"
    secret.write_text(PASSPHRASE + "\n")
    # No medvault on the path: a fresh interpreter in an empty folder, site-packages only.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    run = subprocess.run(
        [sys.executable, "-I", "verify_export.py", str(path), "--passphrase-file", str(secret)],
        cwd=alone,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert "archive verified" in run.stderr and "ok: 3 document files" in run.stdout
    secret_args = ["--passphrase-file", str(secret)]
    cli = subprocess.run(
        [sys.executable, "-m", "medvault.cli", "export", "verify", str(path), *secret_args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr


def test_only_the_requester_follows_an_export_and_others_are_refused(
    client: TestClient,
    app: FastAPI,
    runtime: Runtime,
    make_user: UserFactory,
    tmp_path: Path,
) -> None:
    record = _record(client, runtime, make_user)
    clinician = make_user(Role.CLINICIAN)
    put_on_care_team(runtime, clinician_id=clinician.id, patient_id=record.patient_id)
    clinician_token = login(client, clinician.username, clinician.password).json()["access_token"]
    # Staff on the patient's behalf may ask; the export is then theirs to follow.
    on_behalf = client.post(
        f"/api/v1/patients/{record.patient_id}/exports",
        json={"passphrase": PASSPHRASE},
        headers=bearer(clinician_token),
    )
    assert on_behalf.status_code == 202, on_behalf.text
    export_url = on_behalf.headers["location"]
    # The patient did not ask for this one: as absent as none (and audited).
    assert client.get(export_url, headers=bearer(record.token)).status_code == 404
    # A clinician off the care team cannot ask at all.
    stranger = make_user(Role.CLINICIAN)
    stranger_token = login(client, stranger.username, stranger.password).json()["access_token"]
    refused = client.post(
        f"/api/v1/patients/{record.patient_id}/exports",
        json={"passphrase": PASSPHRASE},
        headers=bearer(stranger_token),
    )
    assert refused.status_code == 404
    denied = [
        e for e in audit_events(runtime, "access.denied") if e.actor_id == f"user:{stranger.id}"
    ]
    assert [str(e.patient_id) for e in denied] == [record.patient_id]
    # A weak passphrase is refused before anything is queued.
    weak = client.post(
        f"/api/v1/patients/{record.patient_id}/exports",
        json={"passphrase": "short"},
        headers=bearer(record.token),
    )
    assert weak.status_code == 422
    assert len(audit_events(runtime, "patient.export.request")) == 1


def test_an_export_expires_and_its_archive_and_link_go(
    client: TestClient, runtime: Runtime, make_user: UserFactory
) -> None:
    record = _record(client, runtime, make_user)
    requested = client.post(
        f"/api/v1/patients/{record.patient_id}/exports",
        json={"passphrase": PASSPHRASE},
        headers=bearer(record.token),
    )
    seal_pending(runtime=runtime)
    run_due_jobs(runtime)
    link = client.get(requested.headers["location"], headers=bearer(record.token)).json()
    with runtime.clinical.session() as session:
        row = session.query(PatientExport).one()
        key = row.storage_key
        session.execute(update(PatientExport).values(expires_at=utcnow() - timedelta(seconds=1)))
        session.commit()
    assert exports.expire(runtime) == 1
    assert key not in {blob.key for blob in runtime.blobs.list_blobs()}
    url = link["download_url"].split("://", 1)[1].split("/", 1)[1]
    gone = client.get(f"/{url}", headers={"Authorization": ""})
    assert gone.status_code in (403, 410), gone.text
    status = client.get(requested.headers["location"], headers=bearer(record.token)).json()
    assert status["state"] == "expired" and status["download_url"] is None
    assert len(audit_events(runtime, "patient.export.expire")) == 1


def test_the_standalone_merkle_check_agrees_with_the_vaults() -> None:
    """The verifier's own RFC 6962 check against medvault.audit's, on many trees."""
    from medvault.audit.merkle import leaf_hash, node_hash
    from medvault.audit.merkle_proofs import verify_inclusion
    from medvault.governance.export_verifier import inclusion_ok

    def root_and_paths(leaves: list[bytes]) -> tuple[bytes, list[list[bytes]]]:
        def mth(items: list[bytes]) -> bytes:
            if len(items) == 1:
                return items[0]
            k = 1
            while k * 2 < len(items):
                k *= 2
            return node_hash(mth(items[:k]), mth(items[k:]))

        def path(m: int, items: list[bytes]) -> list[bytes]:
            if len(items) == 1:
                return []
            k = 1
            while k * 2 < len(items):
                k *= 2
            if m < k:
                return [*path(m, items[:k]), mth(items[k:])]
            return [*path(m - k, items[k:]), mth(items[:k])]

        return mth(leaves), [path(i, leaves) for i in range(len(leaves))]

    for size in range(1, 40):
        leaves = [leaf_hash(str(i).encode()) for i in range(size)]
        root, paths = root_and_paths(leaves)
        for index, proof in enumerate(paths):
            assert inclusion_ok(leaves[index], index, size, proof, root)
            assert verify_inclusion(leaves[index], index, size, proof, root)
            if proof:
                bent = [proof[0][::-1], *proof[1:]]
                assert inclusion_ok(leaves[index], index, size, bent, root) is verify_inclusion(
                    leaves[index], index, size, bent, root
                )
