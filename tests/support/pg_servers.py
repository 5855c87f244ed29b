"""Private PostgreSQL servers for tests that stop and start them (failure drills).

The machine's shared server must never be stopped, so a drill runs its own: ``initdb``
on a temporary folder, ``pg_ctl`` on a free port, listening on 127.0.0.1 only, with its
socket in that folder too. PostgreSQL refuses to run as root (CI runs as root), so
when this process is root the server runs as the ``postgres`` account, as Debian's
``pg_ctlcluster`` does, on a folder that account owns; otherwise as the current user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from tests.support.services import free_port

# Root runs the server as this account (Debian's postgresql package creates it).
SERVER_ACCOUNT = "postgres"
START_TIMEOUT_SECONDS = 60
# A drill checks what the vault does, not PostgreSQL's durability on power loss: a stop
# is always clean (or a crash of the server alone), so the OS still holds every write.
SPEED_SETTINGS = ("fsync=off", "full_page_writes=off", "synchronous_commit=off")


class ClusterError(RuntimeError):
    """initdb or pg_ctl failed; the message carries its output."""


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


def _as_server_account(command: Sequence[str]) -> list[str]:
    if os.geteuid() != 0:
        return list(command)
    return ["runuser", "-u", SERVER_ACCOUNT, "--", *command]


def _run(command: Sequence[str], *, timeout: float = START_TIMEOUT_SECONDS) -> None:
    done = subprocess.run(
        _as_server_account(command), capture_output=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        output = (done.stdout + done.stderr).decode(errors="replace")[-3000:]
        raise ClusterError(f"{' '.join(command[:2])} exited {done.returncode}:\n{output}")


def cluster_tools_missing() -> str | None:
    """Why private clusters cannot run here, or None when they can."""
    for name in ("initdb", "pg_ctl"):
        if _binary(name) is None:
            return f"{name} not found"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_ACCOUNT)
        except KeyError:
            return f"running as root and no {SERVER_ACCOUNT!r} account to run PostgreSQL as"
        if shutil.which("runuser") is None:
            return "running as root and runuser not found"
    return None


class PostgresCluster:
    """One private server: its data folder, port and socket folder."""

    def __init__(self, folder: Path, *, port: int | None = None) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.port = port or free_port()
        self.log = folder / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def initdb(self) -> None:
        initdb = _binary("initdb")
        assert initdb is not None
        _run(
            [
                *(initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres"),
                *("-E", "UTF8", "--no-sync", "--no-instructions"),
            ]
        )

    def copy_to(self, folder: Path) -> PostgresCluster:
        """A second server from this one's (stopped) data folder: quicker than initdb."""
        _run(["cp", "-a", str(self.data), str(folder / "data")])
        return PostgresCluster(folder)

    def start(self) -> None:
        pg_ctl = _binary("pg_ctl")
        assert pg_ctl is not None
        options = [
            f"-p {self.port}",
            f"-k {self.folder}",
            "-c listen_addresses=127.0.0.1",
            *(f"-c {setting}" for setting in SPEED_SETTINGS),
        ]
        _run(
            [
                *(pg_ctl, "-D", str(self.data), "-l", str(self.log)),
                *("-w", "-o", " ".join(options), "start"),
            ]
        )

    def stop(self) -> None:
        """Fast shutdown: every client connection is cut at once, as in an outage."""
        pg_ctl = _binary("pg_ctl")
        assert pg_ctl is not None
        _run([pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop"])

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def create_database(self, name: str) -> str:
        from sqlalchemy import create_engine, text

        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return self.url(name)


@contextmanager
def private_clusters(names: Sequence[str]) -> Iterator[dict[str, PostgresCluster]]:
    """One running server per name, each in its own folder under /tmp; stopped after.

    initdb runs once (seconds); the others start from copies of its folder (far less).
    The folder is not pytest's tmp_path: that one is private to root, and the server
    account must be able to reach its data and socket folders.
    """
    root = Path(tempfile.mkdtemp(prefix="medvault-pg-"))
    clusters: dict[str, PostgresCluster] = {}
    try:
        if os.geteuid() == 0:
            # The server account must reach its folders; mkdtemp made this one root-only.
            shutil.chown(root, SERVER_ACCOUNT, SERVER_ACCOUNT)
        folders = []
        for name in names:
            folder = root / name
            folder.mkdir(mode=0o700)
            if os.geteuid() == 0:
                shutil.chown(folder, SERVER_ACCOUNT, SERVER_ACCOUNT)
            folders.append(folder)
        first = PostgresCluster(folders[0])
        first.initdb()
        clusters[names[0]] = first
        for name, folder in zip(names[1:], folders[1:], strict=True):
            clusters[name] = first.copy_to(folder)
        for cluster in clusters.values():
            cluster.start()
        yield clusters
    finally:
        for cluster in clusters.values():
            if cluster.running:
                with suppress(ClusterError, subprocess.TimeoutExpired):
                    cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
