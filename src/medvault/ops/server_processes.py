"""``medvault serve --workers N``: several server processes on one host.

One Python process uses one core, so the vault runs N of them behind one listening
socket (uvicorn's supervisor binds it once, spawns N children and restarts any that
die). What must still happen once, or be shared, and how:

* **migrations, keys and the first users** are made by ``medvault serve`` before any
  child starts, so children never race to create them;
* **the audit sealer** runs in every child, and the sealer lock it already takes
  (``audit.sealer``) lets one seal at a time;
* **the embedded job worker** runs in one child per host: the first to take an
  exclusive ``flock`` on ``<data dir>/embedded-worker.lock`` keeps it for its life, and
  the kernel frees it when that child dies, for the replacement to take;
* **SQLite writers** of all the children queue on the database's writer-lock file
  (``db.engine.SqliteWriterGate``), waiting in the kernel rather than polling;
* **rate limits** without Redis: each child enforces 1/N of every limit
  (``auth.ratelimit``); with Redis they are shared exactly, as across hosts;
* **metrics**: every child records into ``PROMETHEUS_MULTIPROC_DIR`` (a private
  folder the supervisor makes and removes), so any child's ``/metrics`` covers all.

Children die with the supervisor (``PR_SET_PDEATHSIG``): a supervisor killed with
SIGKILL must not leave orphans holding the port and the database.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

from fastapi import FastAPI

from medvault.config import Settings
from medvault.kit.private_files import ensure_private_file

logger = logging.getLogger(__name__)

# Set by the supervisor for its children: how many they are, and who their parent is.
PROCESSES_ENV = "MEDVAULT_SERVER_WORKERS"
PARENT_ENV = "MEDVAULT_SERVER_SUPERVISOR_PID"
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"
WORKER_LOCK_NAME = "embedded-worker.lock"
_PR_SET_PDEATHSIG = 1

# The child's claim on the embedded worker: held open for the process's life.
_worker_lock: int | None = None


def claim_embedded_worker(data_dir: Path) -> bool:
    """Whether this process is the host's one embedded job worker (first come)."""
    global _worker_lock
    if _worker_lock is not None:
        return True
    path = data_dir / WORKER_LOCK_NAME
    ensure_private_file(path)
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    _worker_lock = fd
    return True


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this child when the supervisor dies, however it dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: uvicorn's own shutdown still applies
        logger.warning("could not tie this server process's life to its supervisor")
        return
    expected = os.environ.get(PARENT_ENV)
    if expected and os.getppid() != int(expected):
        # The supervisor died before the request above took effect.
        os._exit(1)


def child_app() -> FastAPI:
    """uvicorn's app factory, run once in each child process."""
    from medvault.app import create_app
    from medvault.auth.ratelimit import RateLimits
    from medvault.kit.allocator import keep_buffers_mapped
    from medvault.ops.server import configure_guarded_protocol
    from medvault.runtime import build_runtime

    _die_with_parent()
    os.umask(0o077)
    keep_buffers_mapped()
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    # The protocol class is named by import path across the spawn, so its timeout is
    # set here, in the process that uses it.
    configure_guarded_protocol(settings)
    runtime = build_runtime(settings, run_migrations=False)
    run_worker = settings.embedded_worker and claim_embedded_worker(settings.resolved_data_dir)
    app = create_app(runtime=runtime, run_sealer=True, run_worker=run_worker)
    app.state.rate_limits = RateLimits.from_settings(
        settings, processes=settings.effective_server_workers
    )
    logger.info("server process %d ready (embedded worker: %s)", os.getpid(), run_worker)
    return app


@contextlib.contextmanager
def supervisor_environment(processes: int) -> Iterator[None]:
    """The environment the children inherit, and the metrics folder they share."""
    metrics_dir = tempfile.mkdtemp(prefix="medvault-metrics-")  # 0700, this user only
    previous = {key: os.environ.get(key) for key in (PROCESSES_ENV, PARENT_ENV, METRICS_ENV)}
    os.environ[PROCESSES_ENV] = str(processes)
    os.environ[PARENT_ENV] = str(os.getpid())
    os.environ[METRICS_ENV] = metrics_dir
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(metrics_dir, ignore_errors=True)
