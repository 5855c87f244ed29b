"""Two databases become three: a populated vault from before c0014 keeps every patient.

The old vault is built at clinical revision c0013 with the models of today: their
tables are the same there, except that ``patients`` (now in ``PatientBase``) was a
clinical table, so a plain session on the clinical engine writes it where it was.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from medvault.access.models import CareTeamMember
from medvault.access.policy import resolve_patient_scope
from medvault.audit import service as audit
from medvault.audit.context import AuditContext
from medvault.audit.sealer import seal_pending
from medvault.audit.verify import verify_log
from medvault.auth.principal import Principal, PrincipalKind, Role
from medvault.config import Settings
from medvault.db import migrate
from medvault.db.patient_split import PatientSplitConflict, copy_patients
from medvault.documents.models import Document
from medvault.patients import repository as patients_repository
from medvault.patients.models import Patient
from medvault.runtime import build_runtime
from medvault.web.presenters import readable_patients_by_id
from tests.support.services import PostgresDatabases, unavailable

FIELDS = (
    "id",
    "identifier_system",
    "identifier_value",
    "family_name",
    "given_name",
    "birth_date",
    "deceased_on",
    "treatment_ended_on",
    "created_at",
)
DEMOGRAPHIC_COLUMNS = {"identifier_system", "identifier_value", "family_name", "given_name"}
CLINICIAN = uuid.uuid4()
CONTEXT = AuditContext(
    actor_id="system:pytest", actor_role="admin", client_ip=None, user_agent=None, request_id=None
)


@dataclass
class OldVault:
    settings: Settings
    patients: list[tuple[object, ...]]
    documents: dict[uuid.UUID, uuid.UUID]  # document id -> patient id
    team: set[uuid.UUID]  # CLINICIAN's care team
    events: int


@pytest.fixture(params=["sqlite", "postgresql"])
def old_settings(
    request: pytest.FixtureRequest, tmp_path: Path, pg_databases: PostgresDatabases | None
) -> Settings:
    """Settings of a vault whose three databases are empty and not migrated yet."""
    if request.param == "sqlite":
        return Settings(env="test", data_dir=tmp_path / "data")
    if pg_databases is None:
        unavailable("PostgreSQL on 127.0.0.1:5432 is not reachable")
    assert pg_databases is not None
    run = uuid.uuid4().hex[:6]
    return Settings(
        env="test",
        data_dir=tmp_path / "data",
        database_url=pg_databases.create(f"split_{run}_clinical"),
        auth_database_url=pg_databases.create(f"split_{run}_auth"),
        patient_database_url=pg_databases.create(f"split_{run}_patients"),
    )


def _rows(session: Session) -> list[tuple[object, ...]]:
    patients = session.scalars(select(Patient).order_by(Patient.id))
    return [
        tuple(
            value.astimezone(UTC)
            if isinstance(value, datetime) and value.tzinfo
            else value.replace(tzinfo=UTC)
            if isinstance(value, datetime)
            else value
            for value in (getattr(p, name) for name in FIELDS)
        )
        for p in patients
    ]


@pytest.fixture
def old_vault(old_settings: Settings) -> Iterator[OldVault]:
    """A two-database vault at c0013: patients, documents, a care team, a sealed log."""
    runtime = build_runtime(old_settings)
    migrate.upgrade("auth", runtime.auth)
    migrate.upgrade("clinical", runtime.clinical, migrate.BEFORE_SPLIT)
    now = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    documents: dict[uuid.UUID, uuid.UUID] = {}
    team: set[uuid.UUID] = set()
    # A plain session: Patient goes to the clinical engine, where c0013 keeps it.
    with Session(runtime.clinical.engine) as session:
        for n in range(7):
            patient = Patient(
                id=uuid.uuid4(),
                identifier_system="https://fhir.nhs.uk/Id/nhs-number",
                identifier_value=f"94347659{n:02d}",
                family_name=f"Ówen-{n}",
                given_name="Alicia" if n % 2 else "Bryn",
                birth_date=date(1950 + n, 1 + n, 10 + n),
                deceased_on=date(2025, 5, 1) if n == 3 else None,
                treatment_ended_on=date(2024, 2, 2) if n == 4 else None,
                created_at=now + timedelta(minutes=n),
            )
            session.add(patient)
            session.flush()
            document = Document(
                patient_id=patient.id,
                document_type="11488-4",
                title=f"Letter {n}",
                current_version=1,
                created_at=now,
                updated_at=now,
                created_by="system:pytest",
            )
            session.add(document)
            session.flush()
            documents[document.id] = patient.id
            if n < 3:
                team.add(patient.id)
                session.add(
                    CareTeamMember(
                        patient_id=patient.id,
                        clinician_id=CLINICIAN,
                        added_at=now,
                        added_by="system:pytest",
                    )
                )
            for action in ("patient.create", "document.upload"):
                audit.record(
                    session=session,
                    context=CONTEXT,
                    action=action,
                    resource_type="Patient",
                    resource_id=patient.id,
                    patient_id=patient.id,
                )
        session.commit()
        before = _rows(session)
    sealed = seal_pending(runtime=runtime)
    assert sealed.sealed == 14
    runtime.close()
    yield OldVault(old_settings, before, documents, team, 14)


def _principal(role: Role, subject: uuid.UUID | None = None) -> Principal:
    return Principal(
        kind=PrincipalKind.USER, subject_id=subject or uuid.uuid4(), name="pytest", role=role
    )


def test_migrating_a_populated_two_database_vault_moves_every_patient(
    old_vault: OldVault,
) -> None:
    runtime = build_runtime(old_vault.settings, run_migrations=True)
    try:
        with runtime.patients.session() as session:
            assert _rows(session) == old_vault.patients
        clinical = inspect(runtime.clinical.engine)
        tables = clinical.get_table_names()
        assert "patients" not in tables and "patient_refs" in tables
        for table in tables:
            names = {column["name"] for column in clinical.get_columns(table)}
            assert not names & (DEMOGRAPHIC_COLUMNS | {"birth_date"}), table
        with runtime.clinical.session() as session:
            # Documents still name their patient, and the service layer joins the name.
            admin = _principal(Role.ADMIN)
            for document_id, patient_id in old_vault.documents.items():
                document = session.get(Document, document_id)
                assert document is not None and document.patient_id == patient_id
            found = readable_patients_by_id(session, admin, old_vault.documents.values())
            assert {p.id: p.family_name for p in found.values()} == {
                row[0]: row[3] for row in old_vault.patients
            }
            # The care team survived: the clinician reaches exactly those three.
            clinician = _principal(Role.CLINICIAN, CLINICIAN)
            scope = resolve_patient_scope(session, clinician)
            mine = patients_repository.page(session, scope, limit=50, cursor=None, identifier=None)
            assert {p.id for p in mine} == old_vault.team
            # Referential integrity stays inside the clinical database.
            session.add(
                Document(
                    patient_id=uuid.uuid4(),
                    document_type="11488-4",
                    title="orphan",
                    current_version=1,
                    created_at=datetime.now(UTC),
                    updated_at=datetime.now(UTC),
                    created_by="system:pytest",
                )
            )
            with pytest.raises(IntegrityError):
                session.flush()
        report = verify_log(runtime=runtime)
        assert report.healthy and report.tree_size == old_vault.events
        # Once more: nothing to copy, nothing changes.
        runtime.migrate()
        with runtime.patients.session() as session:
            assert _rows(session) == old_vault.patients
    finally:
        runtime.close()


def test_a_migration_interrupted_after_the_copy_finishes_on_the_next_run(
    old_vault: OldVault,
) -> None:
    runtime = build_runtime(old_vault.settings)
    try:
        migrate.upgrade("patients", runtime.patients)
        # The copy is done, then the process dies before c0014 runs.
        assert copy_patients(clinical=runtime.clinical, patients=runtime.patients) == 7
        assert copy_patients(clinical=runtime.clinical, patients=runtime.patients) == 0
        assert migrate.current_revision("clinical", runtime.clinical) == migrate.BEFORE_SPLIT
        runtime.migrate()
        assert migrate.reached("clinical", runtime.clinical, migrate.SPLIT_REVISION)
        with runtime.patients.session() as session:
            assert _rows(session) == old_vault.patients
    finally:
        runtime.close()


def test_a_patient_database_that_disagrees_stops_the_migration_and_drops_nothing(
    old_vault: OldVault,
) -> None:
    runtime = build_runtime(old_vault.settings)
    try:
        migrate.upgrade("patients", runtime.patients)
        first = old_vault.patients[0]
        with runtime.patients.session() as session:
            session.add(
                Patient(**{**dict(zip(FIELDS, first, strict=True)), "family_name": "Someone"})
            )
            session.commit()
        with pytest.raises(PatientSplitConflict, match="differs"):
            runtime.migrate()
        assert migrate.current_revision("clinical", runtime.clinical) == migrate.BEFORE_SPLIT
        assert "patients" in inspect(runtime.clinical.engine).get_table_names()
    finally:
        runtime.close()
