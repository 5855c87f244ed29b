"""Alembic environment for the auth database."""

from medvault import models_registry  # noqa: F401  (registers every model)
from medvault.db.base import AuthBase
from medvault.db.migrate import run_env

run_env(AuthBase.metadata)
