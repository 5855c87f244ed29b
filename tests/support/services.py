"""Real backing services for tests: PostgreSQL databases and an S3 server over HTTP.

With ``CI=true`` a missing service is a test failure, never a skip: CI must prove
the PostgreSQL and S3 paths, not quietly pass without them.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

PG_ADMIN_URL = os.environ.get(
    "MEDVAULT_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
IN_CI = os.environ.get("CI", "").lower() == "true"


def unavailable(reason: str) -> None:
    """Skip locally, fail in CI."""
    if IN_CI:
        pytest.fail(f"required test service missing in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresDatabases:
    """Creates uniquely named databases on the machine's server and drops them after."""

    def __init__(self, admin_url: str) -> None:
        from sqlalchemy import create_engine

        self._engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self.run_id = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self._created: list[str] = []

    def create(self, purpose: str) -> str:
        from sqlalchemy import text

        name = f"medvault_test_{self.run_id}_{purpose}"
        with self._engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self._created.append(name)
        return self._engine.url.set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        from sqlalchemy import text

        with self._engine.connect() as conn:
            for name in self._created:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self._engine.dispose()


@contextmanager
def postgres_databases() -> Iterator[PostgresDatabases | None]:
    try:
        import psycopg  # noqa: F401

        dbs = PostgresDatabases(PG_ADMIN_URL)
        with dbs._engine.connect():
            pass
    except Exception as exc:
        yield None
        _ = exc
        return
    try:
        yield dbs
    finally:
        dbs.drop_all()


class S3Server:
    """moto's S3 in server mode: real HTTP on 127.0.0.1, stopped at session end."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self.port = free_port()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.endpoint_url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    def client(self):  # type: ignore[no-untyped-def]  # boto3 client type is dynamic
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1")


@contextmanager
def s3_server() -> Iterator[S3Server | None]:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    try:
        server = S3Server()
        server.start()
    except Exception:
        yield None
        return
    try:
        yield server
    finally:
        server.stop()
