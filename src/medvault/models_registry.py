"""Imports every model module so each base's metadata is complete (for Alembic).

It sits at the top of the package, beside ``app.py``, because it is wiring: it knows
every domain, and ``db/`` (which owns the bases and engines) must know none of them.
The Alembic environments (``db/migrations/*/env.py``, scripts Alembic loads by path,
not modules of ``medvault.db``) import it.
"""

from medvault.access import models as access_models
from medvault.audit import models as audit_models
from medvault.auth import models as auth_models
from medvault.documents import models as document_models
from medvault.fhir import models as fhir_models
from medvault.fhir.bulk import models as fhir_bulk_models
from medvault.governance import models as governance_models
from medvault.patients import models as patient_models
from medvault.processing import models as processing_models
from medvault.search import models as search_models
from medvault.uploads import models as upload_models

__all__ = [
    "access_models",
    "audit_models",
    "auth_models",
    "document_models",
    "fhir_bulk_models",
    "fhir_models",
    "governance_models",
    "patient_models",
    "processing_models",
    "search_models",
    "upload_models",
]
