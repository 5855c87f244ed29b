"""Shared machinery for the benchmark scripts.

Every benchmark starts its own servers as subprocesses on free 127.0.0.1 ports, with a
throw-away data directory, and stops them again, even when the run fails. Results go to
``bench/results/<name>.json`` and ``bench/results/<name>.png``.

Run the scripts as ``.venv/bin/python bench/<name>.py`` (this folder is then on
``sys.path``, which is how ``import common`` resolves).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # the backend must be chosen before pyplot loads
import psutil
from matplotlib.figure import Figure

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
VENV_BIN = Path(sys.executable).parent
MEDVAULT_BIN = VENV_BIN / "medvault"
HOST = "127.0.0.1"

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
MB = 1_000_000

PDF_MAGIC = b"%PDF-1.7\n"
PATIENT_SYSTEM = "https://example.org/mrn"


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    """A port that is free right now on 127.0.0.1 (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_http(url: str, *, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Poll ``url`` until it answers 200; fail early if the server process died."""
    deadline = time.monotonic() + timeout
    last_error = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError as exc:
            last_error = type(exc).__name__
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s ({last_error})")


def stop_process(proc: subprocess.Popen[bytes], *, timeout: float = 15.0) -> None:
    """SIGTERM the process group we started (uvicorn shuts down gracefully), then SIGKILL."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


class ServerProcess:
    """A server subprocess in its own session, with its log captured to a file."""

    def __init__(
        self, *, name: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def start(self) -> None:
        self._log = self.log_path.open("wb")
        # Own session, so stop() can signal exactly this process tree and nothing else.
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class ManagedServer:
    """A benchmark's server subprocess with its own temporary folder, as a context
    manager: started and answering ``/healthz`` on entry, stopped and its folder
    removed on exit, its log tail printed when something went wrong."""

    name: str
    base_url: str
    data_dir: Path
    server: ServerProcess

    @property
    def pid(self) -> int:
        return self.server.pid

    def _ready(self) -> None:
        """Anything to do once the server answers (a token, say)."""

    def __enter__(self) -> Self:
        try:
            self.server.start()
            assert self.server.proc is not None
            wait_for_http(f"{self.base_url}/healthz", proc=self.server.proc)
            self._ready()
        except BaseException:
            print(self.server.log_tail(), file=sys.stderr)
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            print(f"--- {self.name} log tail ---\n{self.server.log_tail()}", file=sys.stderr)
        self.close()

    def close(self) -> None:
        self.server.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


class VaultServer(ManagedServer):
    """``medvault serve`` on a free port with a temporary data dir and an admin API token.

    Use as a context manager; ``extra_env`` adds or overrides ``MEDVAULT_*`` settings
    (database URLs, upload limit). The token is created with ``medvault token create``
    against the same settings, exactly as an operator would.
    """

    def __init__(self, *, extra_env: Mapping[str, str] | None = None, name: str = "medvault"):
        self.name = name
        self.port = free_port()
        self.data_dir = Path(tempfile.mkdtemp(prefix="medvault-bench-"))
        self.env = {
            **os.environ,
            "MEDVAULT_DATA_DIR": str(self.data_dir),
            "MEDVAULT_HOST": HOST,
            "MEDVAULT_PORT": str(self.port),
            "MEDVAULT_LOG_LEVEL": "WARNING",
            **(extra_env or {}),
        }
        self.base_url = f"http://{HOST}:{self.port}"
        self.token = ""
        self.server = ServerProcess(
            name=name,
            argv=[str(MEDVAULT_BIN), "serve"],
            env=self.env,
            log_path=self.data_dir / "server.log",
        )

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def _ready(self) -> None:
        self.token = create_token(self.env)

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=self.headers, **kwargs)

    def create_patient(self, client: httpx.Client | None = None) -> str:
        """Register a synthetic patient with a unique identifier; returns its id."""
        own = client is None
        http = client or self.client(timeout=30.0)
        try:
            return create_patient(http)
        finally:
            if own:
                http.close()


def create_token(env: Mapping[str, str]) -> str:
    """``medvault token create --name bench`` with the server's settings; prints the token."""
    out = subprocess.run(
        [str(MEDVAULT_BIN), "token", "create", "--name", "bench"],
        env=dict(env),
        capture_output=True,
        check=True,
        timeout=120,
    )
    token = out.stdout.decode().strip().splitlines()[-1].strip()
    if not token:
        raise RuntimeError(f"token create printed nothing: {out.stderr.decode()}")
    return token


def patient_payload(value: str | None = None) -> dict[str, Any]:
    return {
        "identifier": {"system": PATIENT_SYSTEM, "value": value or f"bench-{uuid.uuid4().hex}"},
        "family_name": "Bench",
        "given_name": "Synthetic",
        "birth_date": "1980-01-01",
    }


def create_patient(client: httpx.Client) -> str:
    response = client.post("/api/v1/patients", json=patient_payload())
    if response.status_code != 201:
        raise RuntimeError(f"creating a patient failed: {response.status_code} {response.text}")
    patient_id: str = response.json()["id"]
    return patient_id


def synthetic_pdf(size: int) -> bytes:
    """``size`` bytes that sniff as a PDF; random, so every call is unique content."""
    return PDF_MAGIC + os.urandom(max(0, size - len(PDF_MAGIC)))


def write_synthetic_pdf(path: Path, size: int, *, chunk: int = 8 * MiB) -> None:
    """Write a large synthetic PDF in chunks, so the generator never holds it whole."""
    with path.open("wb") as out:
        out.write(PDF_MAGIC)
        remaining = size - len(PDF_MAGIC)
        while remaining > 0:
            step = min(chunk, remaining)
            out.write(os.urandom(step))
            remaining -= step


# --------------------------------------------------------------------------- memory


@dataclass
class RssSampler:
    """Samples one process's RSS every ``interval`` seconds in a background thread.

    ``window()`` brackets a transfer: it records the RSS just before it starts and the
    peak seen until it ends, so growth = peak - before.
    """

    pid: int
    interval: float = 0.05
    samples: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _started_at: float = 0.0

    def __post_init__(self) -> None:
        self._process = psutil.Process(self.pid)

    def rss(self) -> int:
        rss: int = self._process.memory_info().rss
        return rss

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                value = self.rss()
            except psutil.Error:
                return
            with self._lock:
                self.samples.append((time.monotonic() - self._started_at, value))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def now(self) -> float:
        return time.monotonic() - self._started_at

    @contextlib.contextmanager
    def window(self) -> Iterator[RssWindow]:
        """RSS just before the block and the peak sampled while it ran."""
        win = RssWindow(before=self.rss(), start=self.now())
        try:
            yield win
        finally:
            win.end = self.now()
            with self._lock:
                inside = [rss for t, rss in self.samples if win.start <= t <= win.end]
            inside.append(self.rss())
            win.peak = max(inside)


@dataclass
class RssWindow:
    before: int
    start: float
    end: float = 0.0
    peak: int = 0

    @property
    def growth(self) -> int:
        return max(0, self.peak - self.before)


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile (the same definition as numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max/mean in milliseconds for latencies given in seconds."""
    ms = [s * 1000.0 for s in seconds]
    return {
        "count": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p95_ms": round(percentile(ms, 95), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(max(ms), 3) if ms else math.nan,
        "mean_ms": round(statistics.fmean(ms), 3) if ms else math.nan,
    }


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


# --------------------------------------------------------------------------- output


def machine_info() -> dict[str, Any]:
    git_rev = subprocess.run(
        ["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(REPO_DIR), "status", "--porcelain", "--", "src"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_rev": git_rev + ("+dirty-src" if dirty else ""),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "logical_cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / GiB, 1),
    }


def write_json(name: str, data: Mapping[str, Any], *, directory: Path = RESULTS_DIR) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


def save_figure(fig: Figure, name: str, *, dpi: int = 90, directory: Path = RESULTS_DIR) -> Path:
    """Save a PNG small enough to commit (well under 200 KB at this size and dpi)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def new_figure(ncols: int, *, width: float = 6.0, height: float = 4.2) -> tuple[Figure, Any]:
    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height))
    return fig, axes


def fmt_mib(n: float) -> str:
    return f"{n / MiB:.1f} MiB"
