"""Azurite, Microsoft's Azure Storage emulator, as a real Blob service over HTTP.

``scripts/test.sh`` installs it from npm into ``.cache/azurite`` (a pinned version);
``MEDVAULT_AZURITE_BLOB`` names another ``azurite-blob`` executable. Each test session
starts its own on a free 127.0.0.1 port with its data in a temporary folder, and
stops it at the end.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from medvault.storage.azure_access import AzureAccess
from tests.support.services import free_port

CONTAINER = "medvault-test"
# Azurite's one built-in account and its key, published in Microsoft's documentation
# for the emulator; it opens nothing anywhere else.
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
REPO_ROOT = Path(__file__).resolve().parents[2]
# Starting node and loading Azurite takes 2-10 s on a busy 2-core runner.
START_TIMEOUT_SECONDS = 60


def azurite_binary() -> str | None:
    configured = os.environ.get("MEDVAULT_AZURITE_BLOB")
    if configured:
        return configured
    cached = REPO_ROOT / ".cache" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
    return str(cached) if cached.exists() else shutil.which("azurite-blob")


class AzuriteServer:
    def __init__(self, binary: str, location: Path) -> None:
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}/{ACCOUNT}"
        self._binary = binary
        self._location = location
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.endpoint_url};"
        )

    def access(self) -> AzureAccess:
        return AzureAccess(connection_string=self.connection_string)

    def start(self) -> None:
        command = [
            self._binary,
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(self.port),
            "--location",
            str(self._location),
            "--silent",
            # azure-storage-blob sends a newer x-ms-version than an Azurite release may
            # know; the operations the vault uses are the same in both.
            "--skipApiVersionCheck",
        ]
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"azurite-blob exited with {self._process.returncode}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("azurite-blob did not start listening")

    def stop(self) -> None:
        if self._process is None:
            return
        # Killed, not asked: its data is a throwaway folder, and a polite SIGTERM waits
        # for idle keep-alive connections (10 s and more).
        self._process.kill()
        self._process.wait()
        self._process = None


@contextmanager
def azurite_server(location: Path) -> Iterator[AzuriteServer | None]:
    """Azurite for the block with the test container made (None if it cannot start)."""
    from azure.storage.blob import BlobServiceClient

    binary = azurite_binary()
    if binary is None:
        yield None
        return
    server = AzuriteServer(binary, location)
    try:
        server.start()
        BlobServiceClient.from_connection_string(server.connection_string).create_container(
            CONTAINER
        )
    except Exception:
        server.stop()
        yield None
        return
    try:
        yield server
    finally:
        server.stop()
