"""Reads from a real streaming replica (``pg_basebackup -R``), and when they must not.

The proof that a read came from the replica: replay is paused on the standby
(``pg_wal_replay_pause``), a document is written on the primary, and a read that does
not see it can only have been answered by the replica. The same pause shows the
rules: the writer's own reads, point reads by id, and a clinician whose care team
just changed are answered by the primary.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import select

from medvault.app import create_app
from medvault.auth.principal import Role
from medvault.auth.service import create_api_token
from medvault.config import Settings
from medvault.db import migrate
from medvault.db.engine import Database
from medvault.db.replica import format_lsn, on_replica, parse_lsn, read_with_fallback
from medvault.documents.models import Document
from medvault.ops.read_fences import COOKIE, HEADER
from medvault.runtime import Runtime, build_runtime
from tests.support.factories import create_patient, pdf_bytes, put_on_care_team, upload_multipart
from tests.support.pg_cluster import Cluster, PrivateClusters, private_clusters
from tests.support.users import bearer, create_user, login

WAIT_SECONDS = 20.0
VAULT_ROLE = "medvault"


def _sql(cluster: Cluster, statement: str, database: str = "postgres") -> Any:
    with psycopg.connect(
        host="127.0.0.1", port=cluster.port, user="postgres", dbname=database, autocommit=True
    ) as connection:
        cursor = connection.execute(statement)
        row = cursor.fetchone() if cursor.description else None
        return row[0] if row else None


class Replication:
    def __init__(self, clusters: PrivateClusters, primary: Cluster, standby: Cluster) -> None:
        self.clusters = clusters
        self.primary = primary
        self.standby = standby

    def caught_up(self) -> None:
        """Wait until the standby has replayed everything the primary wrote so far."""
        target = parse_lsn(_sql(self.primary, "SELECT pg_current_wal_insert_lsn()::text"))
        assert target is not None
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            replayed = parse_lsn(_sql(self.standby, "SELECT pg_last_wal_replay_lsn()::text"))
            if replayed is not None and replayed >= target:
                return
            assert time.monotonic() < deadline, "the standby did not catch up"
            time.sleep(0.05)

    def received(self) -> None:
        """Wait until the standby has received (not necessarily replayed) all the primary wrote."""
        target = parse_lsn(_sql(self.primary, "SELECT pg_current_wal_insert_lsn()::text"))
        assert target is not None
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            received = parse_lsn(_sql(self.standby, "SELECT pg_last_wal_receive_lsn()::text"))
            if received is not None and received >= target:
                return
            assert time.monotonic() < deadline, "the standby did not receive the WAL"
            time.sleep(0.05)

    def pause(self) -> None:
        self.caught_up()
        _sql(self.standby, "SELECT pg_wal_replay_pause()")
        deadline = time.monotonic() + WAIT_SECONDS
        while _sql(self.standby, "SELECT pg_get_wal_replay_pause_state()") != "paused":
            assert time.monotonic() < deadline, "replay did not pause"
            time.sleep(0.02)

    def resume(self) -> None:
        _sql(self.standby, "SELECT pg_wal_replay_resume()")


@pytest.fixture(scope="module")
def replication() -> Iterator[Replication]:
    with private_clusters() as clusters:
        primary = clusters.primary()
        # The vault logs in as an ordinary role, as in production: what it asks the
        # replica about its state must be visible without superuser rights.
        _sql(primary, f"CREATE ROLE {VAULT_ROLE} LOGIN")
        # Migrated once; each test copies them (CREATE DATABASE … TEMPLATE), faster than
        # migrating three databases per test.
        for kind in ("clinical", "auth", "patients"):
            _sql(primary, f"CREATE DATABASE {kind}_template OWNER {VAULT_ROLE}")
            database = Database(primary.url(f"{kind}_template", VAULT_ROLE))
            migrate.upgrade(kind, database)
            database.dispose()
        standby = clusters.standby(primary)
        replication = Replication(clusters, primary, standby)
        yield replication
        if standby.running:
            replication.resume()


@pytest.fixture
def runtime(replication: Replication, tmp_path: Path) -> Iterator[Runtime]:
    # Databases of its own: each test starts from empty tables.
    suffix = uuid.uuid4().hex[:8]
    for kind in ("clinical", "auth", "patients"):
        _sql(
            replication.primary,
            f"CREATE DATABASE {kind}_{suffix} TEMPLATE {kind}_template OWNER {VAULT_ROLE}",
        )
    settings = Settings(
        env="test",
        data_dir=tmp_path / "data",
        database_url=replication.primary.url(f"clinical_{suffix}", VAULT_ROLE),
        auth_database_url=replication.primary.url(f"auth_{suffix}", VAULT_ROLE),
        patient_database_url=replication.primary.url(f"patients_{suffix}", VAULT_ROLE),
        database_replica_url=replication.standby.url(f"clinical_{suffix}", VAULT_ROLE),
        replica_max_lag_seconds=600,
        # Not left alone after a failure: the next request asks the replica again.
        replica_retry_seconds=0,
        embedded_worker=False,
    )
    rt = build_runtime(settings)
    yield rt
    replication.resume()
    rt.close()


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime=runtime), raise_server_exceptions=False) as test_client:
        yield test_client


def _api_token(runtime: Runtime) -> dict[str, str]:
    with runtime.auth.session() as session:
        issued = create_api_token(session=session, name="pytest")
        session.commit()
    return bearer(issued.token)


def _user_token(
    client: TestClient, runtime: Runtime, role: Role
) -> tuple[uuid.UUID, dict[str, str]]:
    user = create_user(runtime, role)
    response = login(client, user.username, user.password)
    assert response.status_code == 200, response.text
    return user.id, bearer(response.json()["access_token"])


def _get(client: TestClient, path: str, headers: dict[str, str], **params: Any) -> Any:
    client.cookies.clear()  # another caller: no fence of anyone else's
    return client.get(path, params=params, headers=headers)


def _listed(client: TestClient, headers: dict[str, str], **params: str) -> set[str]:
    response = _get(client, "/api/v1/documents", headers, **params)
    assert response.status_code == 200, response.text
    return {item["id"] for item in response.json()["items"]}


def _upload(client: TestClient, headers: dict[str, str], patient_id: str, title: str) -> Any:
    client.headers.update(headers)
    try:
        response = upload_multipart(client, patient_id, pdf_bytes(), title=title)
    finally:
        client.headers.pop("Authorization")
    assert response.status_code == 201, response.text
    return response


def _audited(runtime: Runtime, resource_id: str) -> int:
    from sqlalchemy import text

    with runtime.clinical.engine.connect() as connection:
        count = connection.execute(
            text("SELECT count(*) FROM audit_events WHERE resource_id = :id"), {"id": resource_id}
        ).scalar()
    return int(count or 0)


def test_lists_searches_and_audit_queries_come_from_the_replica(
    replication: Replication, runtime: Runtime, client: TestClient
) -> None:
    writer = _api_token(runtime)
    reader = _api_token(runtime)
    _auditor_id, auditor = _user_token(client, runtime, Role.AUDITOR)
    client.headers.update(writer)
    patient = create_patient(client)
    client.headers.pop("Authorization")
    first = _upload(client, writer, patient, "Discharge summary alpha").json()["id"]
    replication.pause()

    second = _upload(client, writer, patient, "Discharge summary bravo")
    second_id = second.json()["id"]
    fence = second.headers[HEADER]
    assert parse_lsn(fence) is not None

    # Another caller's list, search and FHIR search: the replica's, without the new one.
    assert _listed(client, reader, patient_id=patient) == {first}
    assert _listed(client, reader, q="bravo") == set()
    # A fence that is not one is ignored, never an error.
    assert _listed(client, {**reader, HEADER: "0/0'; DROP"}, patient_id=patient) == {first}
    bundle = _get(client, "/fhir/DocumentReference", reader, patient=patient)
    assert bundle.status_code == 200, bundle.text
    assert {e["resource"]["id"] for e in bundle.json().get("entry", [])} == {first}
    # The auditor's query too: the new upload's audit event is not on the replica yet.
    events = _get(client, "/api/v1/audit/events", auditor, limit=200)
    assert events.status_code == 200, events.text
    assert second_id not in {e["resource_id"] for e in events.json()["items"]}
    # Each of those reads was audited, on the primary, while the replica could not write.
    assert _audited(runtime, first) >= 1

    # The writer, bringing its fence back (header or cookie), reads its own write.
    assert _listed(client, {**writer, HEADER: fence}, patient_id=patient) == {first, second_id}
    client.cookies.set(COOKIE, fence)
    own = client.get("/api/v1/documents", params={"q": "bravo"}, headers=writer)
    assert [item["id"] for item in own.json()["items"]] == [second_id]
    # And anyone who knows the new id reads it at once: a replica's miss is not believed.
    client.cookies.clear()
    assert client.get(f"/api/v1/documents/{second_id}", headers=reader).status_code == 200
    versions = client.get(f"/api/v1/documents/{second_id}/versions", headers=reader)
    assert versions.status_code == 200, versions.text
    fhir_read = client.get(f"/fhir/DocumentReference/{second_id}", headers=reader)
    assert fhir_read.status_code == 200, fhir_read.text

    replication.resume()
    replication.caught_up()
    assert _listed(client, reader, patient_id=patient) == {first, second_id}


def test_a_new_upload_is_readable_by_its_uploader_at_once(
    replication: Replication, runtime: Runtime, client: TestClient
) -> None:
    uploader = _api_token(runtime)
    client.headers.update(uploader)
    patient = create_patient(client)
    replication.pause()
    # The client keeps the fence cookie, as browsers and cookie-keeping clients do.
    created = upload_multipart(client, patient, pdf_bytes(), title="Clinic letter")
    assert created.status_code == 201, created.text
    assert client.cookies.get(COOKIE) == created.headers[HEADER]
    document_id = created.json()["id"]
    listed = client.get("/api/v1/documents", params={"patient_id": patient})
    assert [item["id"] for item in listed.json()["items"]] == [document_id]
    assert client.get(f"/api/v1/documents/{document_id}").status_code == 200
    content = client.get(f"/api/v1/documents/{document_id}/content")
    assert content.status_code == 200


def test_a_care_team_removal_takes_effect_at_once_while_replay_is_paused(
    replication: Replication, runtime: Runtime, client: TestClient
) -> None:
    admin_headers = _api_token(runtime)
    clinician_id, clinician = _user_token(client, runtime, Role.CLINICIAN)
    _other_id, other = _user_token(client, runtime, Role.CLINICIAN)
    client.headers.update(admin_headers)
    patient = create_patient(client)
    client.headers.pop("Authorization")
    for member in (clinician_id, _other_id):
        put_on_care_team(runtime, clinician_id=member, patient_id=patient)
    document_id = _upload(client, admin_headers, patient, "Referral").json()["id"]
    replication.pause()
    later = _upload(client, admin_headers, patient, "Referral reply").json()["id"]
    # Still on the team: the replica answers (without the document written after the pause).
    assert _listed(client, clinician, patient_id=patient) == {document_id}

    removed = client.delete(f"/api/v1/care-teams/{clinician_id}/{patient}", headers=admin_headers)
    assert removed.status_code == 204, removed.text
    client.cookies.clear()
    # The replica still has the membership; the primary's answer is the one given.
    assert _listed(client, clinician, patient_id=patient) == set()
    assert client.get(f"/api/v1/documents/{document_id}", headers=clinician).status_code == 404
    # Whose team did not change still reads from the replica.
    assert _listed(client, other, patient_id=patient) == {document_id}
    assert later not in _listed(client, other)


def test_reads_go_to_the_primary_while_the_replica_is_down(
    replication: Replication, runtime: Runtime, client: TestClient
) -> None:
    writer = _api_token(runtime)
    reader = _api_token(runtime)
    client.headers.update(writer)
    patient = create_patient(client)
    client.headers.pop("Authorization")
    first = _upload(client, writer, patient, "Before the outage").json()["id"]
    replication.caught_up()
    replica = runtime.clinical_replica
    assert replica is not None
    with replica.read_session(fence=None) as session:
        # Chosen while the replica was up; it goes down before the query runs.
        assert on_replica(session)
        replication.standby.stop("immediate")
        ids = read_with_fallback(session, lambda: session.scalars(select(Document.id)).all())
        assert {str(i) for i in ids} == {first}
        assert not on_replica(session)
    try:
        second = _upload(client, writer, patient, "During the outage").json()["id"]
        assert _listed(client, reader, patient_id=patient) == {first, second}
        assert _listed(client, reader, q="outage") == {first, second}
        assert client.get(f"/api/v1/documents/{second}", headers=reader).status_code == 200
    finally:
        replication.standby.start()


def test_a_lagging_replica_is_not_read(
    replication: Replication, runtime: Runtime, client: TestClient
) -> None:
    assert runtime.clinical_replica is not None
    runtime.clinical_replica.max_lag_seconds = 0
    writer = _api_token(runtime)
    reader = _api_token(runtime)
    client.headers.update(writer)
    patient = create_patient(client)
    client.headers.pop("Authorization")
    replication.pause()
    document_id = _upload(client, writer, patient, "Lagging").json()["id"]
    replication.received()
    # Received but not replayed: the replica is behind, so the primary answers.
    assert _listed(client, reader, patient_id=patient) == {document_id}


def test_fences_are_parsed_strictly() -> None:
    assert parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert format_lsn((0x16 << 32) | 0xB374D848) == "16/B374D848"
    for junk in ("", "16", "16/", "/1", "16/B374D848/1", "G/1", "123456789/1", "1/2 OR 1=1"):
        assert parse_lsn(junk) is None


def test_a_replica_needs_postgresql_on_both_sides(tmp_path: Path) -> None:
    pg = "postgresql+psycopg://medvault@db.internal/clinical"
    with pytest.raises(ValidationError, match="MEDVAULT_DATABASE_URL must be PostgreSQL"):
        Settings(data_dir=tmp_path, database_replica_url=pg)
    with pytest.raises(ValidationError, match="MEDVAULT_DATABASE_REPLICA_URL must be"):
        Settings(data_dir=tmp_path, database_url=pg, database_replica_url="sqlite:///r.db")
    assert Settings(data_dir=tmp_path, database_replica_url=" ").database_replica_url is None
    settings = Settings(data_dir=tmp_path, database_url=pg, database_replica_url=pg)
    assert settings.database_replica_url == pg
