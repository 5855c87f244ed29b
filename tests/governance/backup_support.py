"""What the backup tests share: fresh restore targets, keys moved apart, documents.

A restore target is a vault nobody has used: a new data folder on sqlite-fs; on
pg-s3 two new PostgreSQL databases (named for this run, dropped afterwards) and a
new key prefix in the test bucket.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from medvault.config import Settings
from medvault.governance.backup.keys import export_keys
from medvault.governance.backup.service import Observer
from tests.support.backends import BUCKET
from tests.support.factories import pdf_bytes, upload_raw
from tests.support.services import PG_ADMIN_URL, PostgresDatabases


@contextmanager
def fresh_target(
    source: Settings, tmp_path: Path, pg: PostgresDatabases | None
) -> Iterator[Settings]:
    """Settings of an empty vault on the same backend as ``source``; dropped afterwards."""
    data_dir = tmp_path / f"restored-{uuid.uuid4().hex[:6]}"
    if source.database_url is None:
        yield Settings(env="test", data_dir=data_dir)
        return
    assert pg is not None, "a pg-s3 source needs the pg_databases fixture"
    names = [f"medvault_test_{pg.run_id}_restore_{uuid.uuid4().hex[:8]}_{r}" for r in "cap"]
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        urls = [admin.url.set(database=n).render_as_string(hide_password=False) for n in names]
        yield Settings(
            env="test",
            data_dir=data_dir,
            database_url=urls[0],
            auth_database_url=urls[1],
            patient_database_url=urls[2],
            storage_url=f"s3://{BUCKET}/restored-{uuid.uuid4().hex}",
            s3_endpoint_url=source.s3_endpoint_url,
            s3_region=source.s3_region,
        )
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def move_keys(source: Settings, target: Settings, via: Path) -> None:
    """``backup keys`` from the source vault, then put the files where the target reads them."""
    exported = export_keys(settings=source, destination=via)
    target.resolved_data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in exported.files:
        shutil.copy2(exported.directory / name, target.resolved_data_dir / name)


def upload(client: TestClient, patient_id: str, size: int = 20_000) -> tuple[str, str]:
    """One document through the real upload route; returns (document id, SHA-256)."""
    content = pdf_bytes(size)
    response = upload_raw(client, patient_id, content)
    assert response.status_code == 201, response.text
    return str(response.json()["id"]), hashlib.sha256(content).hexdigest()


def content_sha256(client: TestClient, document_id: str) -> str:
    response = client.get(f"/api/v1/documents/{document_id}/content")
    assert response.status_code == 200, response.text
    return hashlib.sha256(response.content).hexdigest()


@dataclass
class Acknowledged:
    document_id: str
    sha256: str
    at: float
    """time.monotonic() when the 201 arrived."""


@dataclass
class WriteLoad:
    """A thread uploading documents through the API until stopped."""

    client: TestClient
    patient_id: str
    acknowledged: list[Acknowledged] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                document_id, digest = upload(self.client, self.patient_id)
                self.acknowledged.append(Acknowledged(document_id, digest, time.monotonic()))
        except BaseException as exc:
            self.errors.append(exc)

    @contextmanager
    def running(self) -> Iterator[WriteLoad]:
        thread = threading.Thread(target=self._run, name="write-load", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(timeout=60)
        assert not self.errors, self.errors


class StageTimes(Observer):
    """Records when each stage of a backup began."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}

    def stage(self, name: str, total: int | None = None) -> None:
        self.started.setdefault(name, time.monotonic())
