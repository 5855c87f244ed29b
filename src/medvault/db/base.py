"""Declarative bases for the three databases; each has its own metadata and migrations."""

from __future__ import annotations

from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

# Stable constraint names so Alembic migrations are identical on every engine.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class ClinicalBase(DeclarativeBase):
    """Documents, versions, audit events: the clinical database (pseudonymous ids only)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class AuthBase(DeclarativeBase):
    """Credentials only: the auth database, kept apart from clinical data."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class PatientBase(DeclarativeBase):
    """Demographics only: the patient database, which alone joins an id to a person."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
