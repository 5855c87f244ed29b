"""A real clamd for tests, on a free port, with a signature database built on the spot.

freshclam cannot download signatures on the build machines, so the database is one
MD5 hash signature (``.hdb``) for the EICAR test file: the industry's harmless stand-in
for malware. clamd matches it exactly as it would a signature from daily.cvd.
"""

from __future__ import annotations

import hashlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.services import free_port

# Split so that this source file is not itself flagged by a scanner on a developer's laptop.
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
SIGNATURE_NAME = "Medvault.Test.EICAR"
BODY_SIGNATURE_NAME = "Medvault.Test.EICAR-Body"
# clamd appends this to signatures loaded from unsigned local databases.
REPORTED_NAME = f"{SIGNATURE_NAME}.UNOFFICIAL"


@dataclass
class ClamdServer:
    address: str
    port: int
    process: subprocess.Popen[bytes]
    config: Path

    def stop(self) -> None:
        """Stop this clamd (a failure drill): only the one this fixture started."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def start(self) -> None:
        """Start it again on the same port and signatures (after ``stop``)."""
        self.process = _spawn(self.config)
        _wait_until_ready(self.port, self.process)


def clamd_binary() -> str | None:
    return shutil.which("clamd") or (
        "/usr/sbin/clamd" if Path("/usr/sbin/clamd").exists() else None
    )


def write_signatures(directory: Path) -> None:
    """An exact-file hash signature, and a body signature that finds EICAR inside a PDF.

    The vault only accepts real document types (PDF, images, DICOM), so the end-to-end
    tests hide the EICAR string inside an upload: the ``.ndb`` rule matches it anywhere.
    """
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.md5(EICAR, usedforsecurity=False).hexdigest()
    (directory / "medvault-test.hdb").write_text(f"{digest}:{len(EICAR)}:{SIGNATURE_NAME}\n")
    (directory / "medvault-test.ndb").write_text(f"{BODY_SIGNATURE_NAME}:0:*:{EICAR.hex()}\n")


@contextmanager
def running_clamd(workdir: Path) -> Iterator[ClamdServer]:
    port = free_port()
    write_signatures(workdir / "db")
    config = workdir / "clamd.conf"
    config.write_text(
        "\n".join(
            [
                f"DatabaseDirectory {workdir / 'db'}",
                "TCPAddr 127.0.0.1",
                f"TCPSocket {port}",
                "Foreground yes",
                f"LogFile {workdir / 'clamd.log'}",
                # The vault scans large documents: raise the 25 MB default as production must.
                "StreamMaxLength 512M",
                "MaxFileSize 512M",
                "MaxScanSize 512M",
                "",
            ]
        )
    )
    process = _spawn(config)
    server = ClamdServer(f"tcp://127.0.0.1:{port}", port, process, config)
    try:
        _wait_until_ready(port, process)
        yield server
    finally:
        server.stop()


def _spawn(config: Path) -> subprocess.Popen[bytes]:
    binary = clamd_binary()
    if binary is None:
        raise FileNotFoundError("clamd")
    return subprocess.Popen(
        [binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _wait_until_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"clamd exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                conn.sendall(b"zPING\0")
                if conn.recv(16).startswith(b"PONG"):
                    return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError("clamd did not start within 60 s")
