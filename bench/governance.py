"""What records governance costs: a patient's export, and destroying a record.

Records are uploaded through a real ``medvault serve`` (embedded SQLite + blob folder,
its job worker off); the server is then stopped and the governance work is timed in
this process on the same data directory, each step against a baseline that does the
part of the work any other path would do anyway:

* ``read_all`` (baseline): decrypt every version of the record through the content
  reader (``iter_plaintext``, SHA-256 checked), as a full download of each would;
* ``export_build``: the ``patient-export`` job: the same reads, plus the AES-256 ZIP
  under the passphrase, the FHIR bundle, the audit events with their inclusion proofs,
  the signed manifest, and sealing the ZIP's bytes into a vault envelope as they come;
* ``export_download``: streaming the built archive back out of its envelope, once;
* ``blob_delete`` (baseline): deleting the record's blobs and nothing else;
* ``destroy``: the destruction job: hold and date checks, the tombstone, the search
  index, the certificate in the audit log, the blobs, the WAL truncate.

Each round (``--reps``, default 3) uses two fresh, identical records (one destroyed,
one whose blobs are deleted as the baseline). Medians and ratios to the baselines are
reported, and the ratios per round. No timing is asserted anywhere.

    .venv/bin/python bench/governance.py                      # ~1 min on 2 cores
    .venv/bin/python bench/governance.py --documents 2 --doc-mib 4 --reps 1 --name governance_smoke
"""

from __future__ import annotations

import argparse
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from common import (
    MiB,
    VaultServer,
    machine_info,
    median,
    new_figure,
    save_figure,
    synthetic_pdf,
    write_json,
)
from medvault.audit.context import AuditContext
from medvault.audit.sealer import seal_pending
from medvault.auth.principal import Principal, PrincipalKind, Role
from medvault.config import Settings
from medvault.documents.content import iter_plaintext
from medvault.documents.models import Document, DocumentVersion
from medvault.fhir.export_bundle import make_bundle
from medvault.governance import appraisal, destruction, exports
from medvault.governance.exports import ExportRequest
from medvault.governance.models import Appraisal, PatientExport
from medvault.patients.models import Patient
from medvault.runtime import Runtime, build_runtime

PASSPHRASE = "bench passphrase for governance"  # noqa: S105  (a throw-away archive)
STEPS = ("read_all", "export_build", "export_download", "blob_delete", "destroy")


def _manager() -> Principal:
    return Principal(
        kind=PrincipalKind.API_TOKEN,
        subject_id=uuid.uuid4(),
        name="bench",
        role=Role.SERVICE,
        scopes=frozenset({"*"}),
    )


def _upload_record(http: httpx.Client, documents: int, size: int) -> str:
    patient = http.post(
        "/api/v1/patients",
        json={
            "identifier": {"system": "urn:bench", "value": uuid.uuid4().hex},
            "family_name": "Bench",
            "given_name": "Governance",
            "birth_date": "1950-01-01",
        },
    ).json()["id"]
    for n in range(documents):
        response = http.post(
            "/api/v1/documents",
            params={"patient_id": patient, "document_type": "11506-3", "filename": f"d{n}.pdf"},
            content=synthetic_pdf(size),
            headers={"Content-Type": "application/pdf"},
        )
        response.raise_for_status()
    return str(patient)


def _versions(runtime: Runtime, patient: str) -> list[DocumentVersion]:
    with runtime.clinical.session() as session:
        return list(
            session.scalars(
                select(DocumentVersion)
                .join(Document, Document.id == DocumentVersion.document_id)
                .where(Document.patient_id == uuid.UUID(patient))
            )
        )


def _timed(step: str, times: dict[str, float], work: Any) -> Any:
    start = time.perf_counter()
    result = work()
    times[step] = time.perf_counter() - start
    return result


def _round(runtime: Runtime, destroyed: str, deleted: str) -> dict[str, float]:
    times: dict[str, float] = {}
    versions = _versions(runtime, destroyed)

    def read_all() -> int:
        return sum(
            len(piece)
            for version in versions
            for piece in iter_plaintext(runtime, version, 0, version.size - 1, verify_hash=True)
        )

    _timed("read_all", times, read_all)
    principal, context = _manager(), AuditContext.system("bench")
    with runtime.clinical.session() as session:
        request = ExportRequest(passphrase=PASSPHRASE)
        out = exports.request(session, runtime, principal, context, uuid.UUID(destroyed), request)
        session.commit()
    seal_pending(runtime=runtime)
    _timed("export_build", times, lambda: exports.run(runtime, out.id, make_bundle))
    with runtime.clinical.session() as session:
        export = session.get(PatientExport, out.id)
        assert export is not None
        session.expunge(export)
    _timed("export_download", times, lambda: sum(map(len, exports.archive_bytes(runtime, export))))

    keys = [version.storage_key for version in _versions(runtime, deleted)]

    def delete_blobs() -> None:
        for key in keys:
            runtime.blobs.delete(key)

    _timed("blob_delete", times, delete_blobs)
    with runtime.patients.session() as session:
        patient = session.get(Patient, uuid.UUID(destroyed))
        assert patient is not None
        patient.treatment_ended_on = patient.birth_date.replace(year=2000)
        session.commit()
    appraisal.run(runtime)
    with runtime.clinical.session() as session:
        listed = list(
            session.scalars(select(Appraisal).where(Appraisal.patient_id == uuid.UUID(destroyed)))
        )
        for item in listed:
            appraisal.approve(session, runtime, principal, context, item.id, "bench")
        session.commit()

    def destroy_all() -> None:
        for item in listed:
            destruction.destroy(runtime, item.id)

    _timed("destroy", times, destroy_all)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=8)
    parser.add_argument("--doc-mib", type=int, default=16)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--name", default="governance")
    args = parser.parse_args()
    size = args.doc_mib * MiB
    extra = {"MEDVAULT_EMBEDDED_WORKER": "false", "MEDVAULT_MAX_UPLOAD_BYTES": str(size * 2)}
    rounds: list[dict[str, float]] = []
    with VaultServer(extra_env=extra) as vault:
        with vault.client(timeout=300) as http:
            # Per round: a record to destroy, and one as large whose blobs the baseline deletes.
            records = [
                (
                    _upload_record(http, args.documents, size),
                    _upload_record(http, args.documents, size),
                )
                for _ in range(args.reps)
            ]
        vault.server.stop()
        settings = Settings(
            env="development",
            data_dir=Path(vault.data_dir),
            max_upload_bytes=size * 2,
            embedded_worker=False,
        )
        runtime = build_runtime(settings)
        try:
            for number, (destroyed, deleted) in enumerate(records, start=1):
                times = _round(runtime, destroyed, deleted)
                rounds.append(times)
                print(f"round {number}: " + ", ".join(f"{k} {v:.2f} s" for k, v in times.items()))
        finally:
            runtime.close()
    medians = {step: median([r[step] for r in rounds]) for step in STEPS}
    total = args.documents * size
    ratios = {
        "export_build_vs_read_all": medians["export_build"] / medians["read_all"],
        "export_download_vs_read_all": medians["export_download"] / medians["read_all"],
        "destroy_vs_blob_delete": medians["destroy"] / medians["blob_delete"],
    }
    per_round = [
        {
            "export_build_vs_read_all": r["export_build"] / r["read_all"],
            "destroy_vs_blob_delete": r["destroy"] / r["blob_delete"],
        }
        for r in rounds
    ]
    result = {
        "machine": machine_info(),
        "record": {"documents": args.documents, "doc_bytes": size, "total_bytes": total},
        "rounds": rounds,
        "medians_s": medians,
        "throughput_mib_s": {
            step: total / MiB / medians[step]
            for step in ("read_all", "export_build", "export_download")
        },
        "ratios": ratios,
        "ratios_per_round": per_round,
    }
    path = write_json(args.name, result)
    fig, (left, right) = new_figure(2)
    left.bar(["read_all", "export_build", "export_download"], [medians[s] for s in STEPS[:3]])
    left.set_title(f"Export of {total // MiB} MiB ({args.documents} documents), median s")
    right.bar(["blob_delete", "destroy"], [medians["blob_delete"], medians["destroy"]])
    right.set_title("Destroying the record vs deleting its blobs, median s")
    save_figure(fig, args.name)
    print(f"medians: {medians}\nratios: {ratios}\nwrote {path}")


if __name__ == "__main__":
    main()
