"""``medvault serve`` as a real subprocess that a test can SIGKILL and restart.

In-process servers (``LiveServer``) share the test's interpreter, so they cannot
show what a crash leaves behind. This runs the installed CLI exactly as an operator
would, on a data folder and port that survive restarts, and keeps the server's
stderr in a file so a failed restart can be diagnosed from the test report.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import httpx
import psutil

from tests.support.services import free_port

# Generous: a restart after SIGKILL may have to recover a SQLite WAL, and the
# machine is shared with other test processes.
START_TIMEOUT_SECONDS = 90.0
STOP_TIMEOUT_SECONDS = 15.0


class VaultProcessError(RuntimeError):
    """The server would not start, or died on its own."""


def vault_environment(
    data_dir: Path, port: int, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The parent's environment minus any MEDVAULT_* leaking in, plus this vault's."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MEDVAULT_")}
    env.update(
        MEDVAULT_ENV="test",
        MEDVAULT_DATA_DIR=str(data_dir),
        MEDVAULT_HOST="127.0.0.1",
        MEDVAULT_PORT=str(port),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra or {})
    return env


class VaultProcess:
    """One vault on a fixed data folder and port, started and killed as a subprocess."""

    def __init__(
        self,
        data_dir: Path,
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = vault_environment(data_dir, self.port, env)
        self.starts = 0
        self.kills = 0
        self._proc: subprocess.Popen[bytes] | None = None
        data_dir.mkdir(parents=True, exist_ok=True)

    # -- CLI ---------------------------------------------------------------------------

    def cli(self, *args: str, timeout: float = 120.0) -> str:
        """Run ``medvault <args>`` against this vault's settings and return its stdout."""
        done = subprocess.run(
            [sys.executable, "-m", "medvault.cli", *args],
            env=self.env,
            cwd=self.data_dir,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise VaultProcessError(
                f"medvault {' '.join(args)} exited {done.returncode}:\n"
                f"{done.stderr.decode(errors='replace')[-4000:]}"
            )
        return done.stdout.decode()

    def create_token(self, name: str) -> str:
        """An admin API token; ``token create`` prints only the token."""
        token = self.cli("token", "create", "--name", name).strip()
        if not token or any(ch.isspace() for ch in token):
            raise VaultProcessError(f"unexpected token output: {token!r}")
        return token

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, *, timeout: float = START_TIMEOUT_SECONDS) -> None:
        """Spawn ``medvault serve`` and return once GET /healthz answers 200."""
        if self.alive:
            raise VaultProcessError("already running")
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start #{self.starts} at {time.time():.3f} =====\n".encode())
            log.flush()
            # Its own session: a SIGKILL aimed at the server never reaches pytest.
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "medvault.cli", "serve"],
                env=self.env,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        self._wait_healthy(timeout)

    def _wait_healthy(self, timeout: float) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                code = self._proc.poll()
                if code is not None:
                    raise VaultProcessError(
                        f"medvault serve exited with {code} during start #{self.starts}:\n"
                        f"{self.log_tail()}"
                    )
                try:
                    if client.get(self.url + "/healthz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
        self.kill()
        raise VaultProcessError(
            f"medvault serve did not answer /healthz within {timeout:.0f}s "
            f"(start #{self.starts}):\n{self.log_tail()}"
        )

    def server_pids(self) -> list[int]:
        """The processes answering requests: the children of ``serve --workers N``, or
        the one process itself when it serves alone."""
        if self._proc is None:
            return []
        servers = []
        for child in psutil.Process(self._proc.pid).children():
            try:
                # uvicorn spawns its children through multiprocessing, which may also
                # start a resource tracker: that one answers nothing.
                if "spawn_main" in " ".join(child.cmdline()):
                    servers.append(child.pid)
            except psutil.NoSuchProcess:
                continue
        return servers or [self._proc.pid]

    def rss_bytes(self) -> int:
        """Resident memory of the whole server: the supervisor and every child."""
        assert self._proc is not None
        root = psutil.Process(self._proc.pid)
        return sum(proc.memory_info().rss for proc in [root, *root.children(recursive=True)])

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no flushing, exactly like a power cut to the process.

        Sent to the whole process group (the server runs in its own session), so every
        server process dies at once, as in a power cut, rather than the children being
        told to shut down gracefully when their supervisor disappears.
        """
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        members = self._group()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT_SECONDS)
        psutil.wait_procs(members, timeout=STOP_TIMEOUT_SECONDS)
        self.kills += 1
        self._log_marker(f"SIGKILL #{self.kills} (pid {proc.pid})")

    def _group(self) -> list[psutil.Process]:
        assert self._proc is not None
        try:
            return psutil.Process(self._proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self) -> None:
        """Graceful stop (SIGTERM), falling back to SIGKILL."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        members = self._group()
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_TIMEOUT_SECONDS)
        # The next start may reuse the port and the data folder's locks.
        psutil.wait_procs(members, timeout=STOP_TIMEOUT_SECONDS)
        self._log_marker(f"stopped (pid {proc.pid}, exit {proc.returncode})")

    def restart(self, *, timeout: float = START_TIMEOUT_SECONDS) -> None:
        self.stop()
        self.start(timeout=timeout)

    def _log_marker(self, text: str) -> None:
        with self.log_path.open("ab") as log:
            log.write(f"===== {text} at {time.time():.3f} =====\n".encode())

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_bytes()[-chars:].decode(errors="replace")
        except FileNotFoundError:
            return "(no server log)"

    def __enter__(self) -> VaultProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
