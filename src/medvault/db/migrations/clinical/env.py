"""Alembic environment for the clinical database."""

from medvault import models_registry  # noqa: F401  (registers every model)
from medvault.db.base import ClinicalBase
from medvault.db.migrate import run_env

run_env(ClinicalBase.metadata)
