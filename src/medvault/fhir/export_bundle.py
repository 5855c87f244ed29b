"""A patient's record as one FHIR R4 Bundle, for their export archive.

The resources are the ones the FHIR API serves (the same mappings), with each
DocumentReference's attachment pointing at its file inside the archive instead of at
``Binary/{id}`` on the server: an export is read offline. The original file name goes
in ``attachment.title`` beside the title, since the archive's own names are neutral.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from medvault.fhir.mapping import document_reference, patient
from medvault.governance.export_archive import Exported
from medvault.kit.clock import utcnow
from medvault.patients.models import Patient


def make_bundle(session: Session, subject: Patient, exported: list[Exported]) -> dict[str, Any]:
    del session  # everything needed is loaded already
    entries: list[dict[str, Any]] = [
        {"fullUrl": f"urn:uuid:{subject.id}", "resource": patient.to_resource(subject)}
    ]
    for document, version, path in exported:
        resource = document_reference.to_resource(document, version, base="")
        attachment = resource["content"][0]["attachment"]
        attachment["url"] = path
        attachment["title"] = version.original_filename
        resource["subject"] = {"reference": f"Patient/{subject.id}"}
        entries.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": resource})
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": utcnow().isoformat().replace("+00:00", "Z"),
        "entry": entries,
    }
