"""Imports every model module so each base's metadata is complete (for Alembic)."""

from medvault.access import models as access_models
from medvault.audit import models as audit_models
from medvault.auth import models as auth_models
from medvault.documents import models as document_models
from medvault.fhir import models as fhir_models
from medvault.patients import models as patient_models

__all__ = [
    "access_models",
    "audit_models",
    "auth_models",
    "document_models",
    "fhir_models",
    "patient_models",
]
