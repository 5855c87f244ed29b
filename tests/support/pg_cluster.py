"""Private PostgreSQL clusters for tests that need a server of their own.

The machine's shared server cannot be stopped, paused or given a standby, so tests of
replication and the failure drills start their own: ``initdb`` into a temporary
directory, ``pg_ctl`` on a free 127.0.0.1 port with its socket in that directory, and
standbys made with ``pg_basebackup -R`` (a real streaming replica). PostgreSQL refuses
to run as root, and CI runs as root: then every command runs as the ``postgres`` OS
user (``runuser``) on directories handed to it, as Debian's ``pg_ctlcluster`` does.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.support.services import free_port, unavailable

# A private server has no other users: fast settings, nothing that makes it durable. A
# test stops a server cleanly (or crashes it alone), so the OS still holds every write.
FAST_SETTINGS = (
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "shared_buffers=16MB",
    "max_connections=40",
)
# A server of its own for each database (the drills): as many connections as a stock
# server, since one vault process may open up to 46 to the auth database.
_SERVER = (*FAST_SETTINGS, "max_connections=100")
# What a primary needs to feed streaming standbys.
_PRIMARY = ("wal_level=replica", "max_wal_senders=4", "hot_standby=on")
REPLICATION_USER = "replicator"


def _binaries() -> Path | None:
    """The directory holding initdb, pg_ctl and pg_basebackup of one version."""
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for directory in candidates:
        if all((directory / tool).exists() for tool in ("initdb", "pg_ctl", "pg_basebackup")):
            return directory
    return None


def tools_missing() -> str | None:
    """Why private clusters cannot run here, or None when they can."""
    if _binaries() is None:
        return "initdb, pg_ctl and pg_basebackup are not installed"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and no 'postgres' OS user to run PostgreSQL as"
        if shutil.which("runuser") is None:
            return "running as root and runuser not found"
    return None


def _run_as_user() -> tuple[list[str], int | None, int | None]:
    """The prefix that runs a command as a non-root user, and that user's ids (what
    ``tools_missing`` checked is there)."""
    if os.geteuid() != 0:
        return [], None, None
    entry = pwd.getpwnam("postgres")
    runuser = shutil.which("runuser")
    assert runuser is not None
    return [runuser, "-u", "postgres", "--"], entry.pw_uid, entry.pw_gid


class Cluster:
    """One running PostgreSQL server in a private directory."""

    def __init__(self, owner: PrivateClusters, data_dir: Path, port: int) -> None:
        self._owner = owner
        self.data_dir = data_dir
        self.port = port
        self.running = False

    def url(self, database: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql+psycopg://{user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        self._owner.run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.data_dir / "server.log"),
            "-w",
            "-t",
            "30",
            "start",
        )
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """``fast`` (the default) cuts every client connection at once, as an outage does."""
        if self.running:
            self._owner.run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")
            self.running = False

    def create(self, purpose: str) -> str:
        """A database named for ``purpose`` (``cluster.DatabaseMaker``), and its URL."""
        return self.create_database(f"medvault_{purpose}")

    def create_database(self, name: str) -> str:
        """A new database on this server, and its URL."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", autocommit=True
        ) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


class PrivateClusters:
    """Makes clusters under one temporary directory and stops them all at the end."""

    def __init__(self) -> None:
        missing = tools_missing()
        if missing:
            unavailable(f"private PostgreSQL servers: {missing}")
        binaries = _binaries()
        assert binaries is not None
        self._bin = binaries
        self._prefix, uid, gid = _run_as_user()
        self.root = Path(tempfile.mkdtemp(prefix="medvault-pg-"))
        if uid is not None and gid is not None:
            os.chown(self.root, uid, gid)
        self.socket_dir = self.root
        self._clusters: list[Cluster] = []

    def run(self, tool: str, *args: str) -> None:
        """One of PostgreSQL's tools (``initdb``, ``pg_ctl``...), as the server's user."""
        self._run([str(self._bin / tool), *args])

    def _run(self, command: Sequence[str]) -> None:
        done = [*self._prefix, *command]
        result = subprocess.run(done, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            name = Path(command[0]).name
            raise RuntimeError(f"{name} failed ({result.returncode}): {result.stderr[-2000:]}")

    def _configure(self, data_dir: Path, port: int, settings: Sequence[str]) -> None:
        lines = [
            f"port={port}",
            "listen_addresses='127.0.0.1'",
            f"unix_socket_directories='{self.socket_dir}'",
            *settings,
        ]
        with (data_dir / "postgresql.auto.conf").open("a") as conf:
            conf.write("\n".join(lines) + "\n")

    def _initdb(self, data_dir: Path) -> None:
        self.run(
            "initdb",
            "-D",
            str(data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )

    def _start_new(self, data_dir: Path, settings: Sequence[str]) -> Cluster:
        port = free_port()
        # postgresql.auto.conf: the last line for a setting wins, so a copied data
        # directory gets its own port.
        self._configure(data_dir, port, settings)
        cluster = Cluster(self, data_dir, port)
        self._clusters.append(cluster)
        cluster.start()
        return cluster

    def servers(
        self, names: Sequence[str], settings: Sequence[str] = _SERVER
    ) -> dict[str, Cluster]:
        """Independent started servers, one per name (the drills' three databases).

        initdb runs once (seconds); the others start from copies of its directory.
        ``settings`` are postgresql.conf lines (by default: fast, not durable); for a
        repeated setting the last line wins.
        """
        first = self.root / f"{names[0]}-{len(self._clusters)}"
        self._initdb(first)
        folders = {names[0]: first}
        for name in names[1:]:
            folders[name] = self.root / f"{name}-{len(self._clusters)}"
            self._run(["cp", "-a", str(first), str(folders[name])])
        return {name: self._start_new(folder, settings) for name, folder in folders.items()}

    def primary(self) -> Cluster:
        """A started primary that accepts replication from 127.0.0.1 (trust auth)."""
        data_dir = self.root / f"primary-{len(self._clusters)}"
        self._initdb(data_dir)
        with (data_dir / "pg_hba.conf").open("a") as hba:
            hba.write(f"host replication {REPLICATION_USER} 127.0.0.1/32 trust\n")
        cluster = self._start_new(data_dir, (*FAST_SETTINGS, *_PRIMARY))
        port = cluster.port
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", autocommit=True) as c:
            c.execute(f"CREATE ROLE {REPLICATION_USER} WITH REPLICATION LOGIN")
        return cluster

    def standby(self, primary: Cluster) -> Cluster:
        """A started hot standby streaming from ``primary`` (``pg_basebackup -R``)."""
        data_dir = self.root / f"standby-{len(self._clusters)}"
        self.run(
            "pg_basebackup",
            "-h",
            "127.0.0.1",
            "-p",
            str(primary.port),
            "-U",
            REPLICATION_USER,
            "-D",
            str(data_dir),
            "-R",  # standby.signal + primary_conninfo: a streaming replica
            "-X",
            "stream",
            "--checkpoint=fast",
            "--no-sync",
        )
        # Appended after what -R wrote, so the standby gets its own port and socket.
        return self._start_new(data_dir, (*FAST_SETTINGS, "hot_standby=on"))

    def close(self) -> None:
        for cluster in reversed(self._clusters):
            # Already stopped by the test, or never started: nothing to do.
            with contextlib.suppress(RuntimeError):
                cluster.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def private_clusters() -> Iterator[PrivateClusters]:
    clusters = PrivateClusters()
    try:
        yield clusters
    finally:
        clusters.close()
