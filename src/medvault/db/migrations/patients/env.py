"""Alembic environment for the patient database."""

from medvault import models_registry  # noqa: F401  (registers every model)
from medvault.db.base import PatientBase
from medvault.db.migrate import run_env

run_env(PatientBase.metadata)
