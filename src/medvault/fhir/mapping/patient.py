"""Patient ⇐ the registry's patient row (read-only over FHIR)."""

from __future__ import annotations

from typing import Any

from medvault.fhir.wire.primitives import instant
from medvault.patients.models import Patient

# Registry rows never change after they are created.
PATIENT_VERSION = "1"


def to_resource(patient: Patient) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": str(patient.id),
        "meta": {"versionId": PATIENT_VERSION, "lastUpdated": instant(patient.created_at)},
        "identifier": [
            {
                "use": "official",
                "system": patient.identifier_system,
                "value": patient.identifier_value,
            }
        ],
        "name": [{"use": "official", "family": patient.family_name, "given": [patient.given_name]}],
        "birthDate": patient.birth_date.isoformat(),
    }
