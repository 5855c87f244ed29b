"""A scaled-out vault on real parts, for tests/e2e/test_scale_out.py and bench/load.py.

N ``medvault serve`` instances (one server process each, embedded worker off) and M
``medvault worker`` processes share one PostgreSQL (a database per purpose), one S3
server and a private ``redis-server`` on a free port, behind Debian's nginx running
the shipped deploy/nginx/medvault.conf with an upstream block over the instances
(round-robin, nginx's default). Keys come from the environment, as in production,
so no instance generates its own; each instance keeps its own data folder (its audit
witness directory), as separate hosts would.

nginx adds ``X-Upstream: $upstream_addr`` to every answer, so a test can tell which
instance served a request (several addresses, comma-separated, when nginx retried).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Protocol

import psutil

from medvault.config import Settings
from medvault.crypto.keyring import Keyring
from medvault.crypto.signing_keys import generate_pem
from tests.support.nginx import NginxProxy
from tests.support.services import free_port, unavailable
from tests.support.vault_process import VaultProcess, vault_environment

# One line per database the vault needs: setting -> the purpose in the database's name.
DATABASE_SETTINGS: Mapping[str, str] = {
    "database_url": "clinical",
    "auth_database_url": "auth",
    "patient_database_url": "patients",
}
UPSTREAM_HEADER = "X-Upstream"
REDIS_CANDIDATES = ("/usr/bin/redis-server", "/usr/local/bin/redis-server")
STOP_TIMEOUT_SECONDS = 15.0


class DatabaseMaker(Protocol):
    """Makes a fresh database and returns its URL (the shared server's
    ``PostgresDatabases`` or a private ``pg_cluster`` server)."""

    def create(self, purpose: str) -> str: ...


def create_databases(databases: DatabaseMaker, run: str) -> dict[str, str]:
    """A fresh database for each of DATABASE_SETTINGS: {setting: url}."""
    return {
        setting: databases.create(f"{run}_{purpose}")
        for setting, purpose in DATABASE_SETTINGS.items()
    }


def shared_keys() -> dict[str, str]:
    """Every secret the instances must share, generated once for the cluster."""
    return {
        "keyring": json.dumps(json.loads(Keyring.generate().to_json())),
        "secret_key": secrets.token_urlsafe(48),
        "jwt_private_key": generate_pem().decode(),
        "audit_signing_key": generate_pem().decode(),
    }


class RedisServer:
    """A private ``redis-server`` on a free port: its counters are this cluster's alone,
    and nothing touches the machine's shared Redis."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server") or next(
            (path for path in REDIS_CANDIDATES if Path(path).exists()), None
        )
        if binary is None:
            unavailable("redis-server is not installed (apt-get install redis-server)")
        self.binary = str(binary)
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            [
                *(self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", ""),
                *("--appendonly", "no", "--dir", str(self.folder)),
                *("--logfile", str(self.folder / "redis.log")),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._proc.returncode}")
            if self.ping():
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_SECONDS)


class WorkerProcess:
    """One ``medvault worker``: claims jobs from the shared queue until SIGTERM."""

    def __init__(self, folder: Path, env: Mapping[str, str]) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.log_path = folder / "worker.log"
        self.env = dict(env)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "medvault.cli", "worker"],
                env=self.env,
                cwd=self.folder,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    def rss_bytes(self) -> int:
        assert self._proc is not None
        root = psutil.Process(self._proc.pid)
        return sum(proc.memory_info().rss for proc in [root, *root.children(recursive=True)])

    def stop(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # finishes or releases its current job, then exits
        try:
            proc.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_TIMEOUT_SECONDS)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-chars:].decode(errors="replace")
        except FileNotFoundError:
            return "(no worker log)"


class Cluster:
    """The whole stack, started on ``with`` and stopped (everything) on exit.

    ``database_urls`` maps Settings fields to URLs (see :func:`create_databases`);
    ``settings`` adds or overrides MEDVAULT_* settings for every process;
    ``fail_timeout`` overrides nginx's (10 s: how long it leaves a server aside after
    a failed attempt, which is also how long a restarted instance may wait for traffic).
    """

    def __init__(
        self,
        folder: Path,
        *,
        instances: int,
        workers: int,
        database_urls: Mapping[str, str],
        s3_endpoint_url: str,
        storage_url: str,
        settings: Mapping[str, str] | None = None,
        fail_timeout: str | None = None,
    ) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(folder / "redis")
        self.fields: dict[str, str] = {
            **database_urls,
            **shared_keys(),
            "storage_url": storage_url,
            "s3_endpoint_url": s3_endpoint_url,
            "s3_region": "us-east-1",
            "redis_url": self.redis.url,
            "embedded_worker": "false",
            "server_workers": "1",
            "trusted_proxies": "127.0.0.1",
            "worker_poll_seconds": "0.2",
            # All the test's traffic comes from one address: the per-address login
            # limit would otherwise stop the load, not measure it.
            "login_rate_limit_ip": "100000/minute",
            "upload_rate_limit": "100000/minute",
            **(settings or {}),
        }
        env = {f"MEDVAULT_{key.upper()}": value for key, value in self.fields.items()}
        self.instances = [
            VaultProcess(folder / f"serve-{n}", log_path=folder / f"serve-{n}.log", env=env)
            for n in range(instances)
        ]
        self.nginx = NginxProxy(
            folder / "nginx",
            upstream_ports=[instance.port for instance in self.instances],
            server_extra=f"add_header {UPSTREAM_HEADER} $upstream_addr always;",
            server_parameters=f"fail_timeout={fail_timeout}" if fail_timeout else "",
        )
        self.url = self.nginx.url
        for instance in self.instances:
            # Signed links name the address clients use: nginx's.
            instance.env["MEDVAULT_PUBLIC_URL"] = self.url
        self.workers = [
            WorkerProcess(folder / f"worker-{n}", vault_environment(folder / f"worker-{n}", 0, env))
            for n in range(workers)
        ]

    # -- addresses -------------------------------------------------------------------------

    def upstream(self, instance: VaultProcess) -> str:
        """The address nginx names the instance by in X-Upstream."""
        return f"127.0.0.1:{instance.port}"

    def instance_at(self, upstream: str) -> VaultProcess | None:
        return next((i for i in self.instances if self.upstream(i) == upstream), None)

    def settings(self) -> Settings:
        """The instances' settings, for looking behind the API from the test process."""
        return Settings(
            env="test",
            data_dir=self.folder / "inspect",
            **self.fields,  # type: ignore[arg-type]
        )

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.redis.start()
        # All at once on the empty databases, as a first rollout would: migrations
        # take an advisory lock, and the first users are made once (auth.bootstrap).
        with ThreadPoolExecutor(len(self.instances)) as pool:
            list(pool.map(lambda instance: instance.start(), self.instances))
        for worker in self.workers:
            worker.start()
        self.nginx.__enter__()

    def stop(self) -> None:
        self.nginx.__exit__(None, None, None)
        # Together: each may take a moment to finish what it is doing.
        processes: list[VaultProcess | WorkerProcess] = [*self.workers, *self.instances]
        with ThreadPoolExecutor(len(processes)) as pool:
            list(pool.map(lambda process: process.stop(), processes))
        self.redis.stop()

    def create_token(self, name: str = "cluster") -> str:
        return self.instances[0].create_token(name)

    def rss(self) -> dict[str, int]:
        """Resident memory of every running server and worker process, by name."""
        sizes: dict[str, int] = {}
        for n, instance in enumerate(self.instances):
            if instance.alive:
                sizes[f"serve-{n}"] = instance.rss_bytes()
        for n, worker in enumerate(self.workers):
            if worker.alive:
                sizes[f"worker-{n}"] = worker.rss_bytes()
        return sizes

    def logs(self) -> str:
        parts = [f"--- serve-{n} ---\n{i.log_tail()}" for n, i in enumerate(self.instances)]
        parts += [f"--- worker-{n} ---\n{w.log_tail()}" for n, w in enumerate(self.workers)]
        parts.append(f"--- nginx ---\n{self.nginx.error_log()[-3000:]}")
        return "\n".join(parts)

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def witness_dirs(cluster: Cluster) -> Sequence[Path]:
    """Each instance's audit witness directory (its data folder's default)."""
    return [instance.data_dir / "witness" for instance in cluster.instances]
