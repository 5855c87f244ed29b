"""A client for ClamAV's clamd: INSTREAM over TCP or a Unix socket.

Written here rather than taken from PyPI: the ``clamd`` and ``pyClamd`` packages were
last released in 2017/2014 and buffer whole files for INSTREAM. The protocol is four
commands on a socket; this module streams chunk by chunk, so plaintext never touches
disk and memory stays flat at any document size.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

# clamd reads INSTREAM in chunks it sizes itself; 64 KiB keeps syscalls few.
_CHUNK = 64 * 1024


class ScannerError(Exception):
    """clamd is unreachable, refused the stream, or answered something unexpected."""


@dataclass(frozen=True)
class ScanVerdict:
    infected: bool
    # The signature name clamd reported, e.g. "Win.Test.EICAR_HDB-1"; None when clean.
    signature: str | None
    # "ClamAV 1.4.6/27480/Thu Dec  3 08:40:53 2026": engine, signature version and date.
    engine: str


class ClamdClient:
    def __init__(self, address: str, *, timeout: float = 60.0) -> None:
        """``address`` is ``tcp://host:port`` or ``unix:///path/to/clamd.ctl``."""
        parts = urlsplit(address)
        if parts.scheme == "tcp" and parts.hostname and parts.port:
            self._family = socket.AF_INET
            self._target: str | tuple[str, int] = (parts.hostname, parts.port)
        elif parts.scheme == "unix" and parts.path:
            self._family = socket.AF_UNIX
            self._target = parts.path
        else:
            raise ValueError("clamd address must be tcp://host:port or unix:///path")
        self._timeout = timeout

    def ping(self) -> bool:
        try:
            return self._command(b"PING") == "PONG"
        except ScannerError:
            return False

    def version(self) -> str:
        return self._command(b"VERSION")

    def scan(self, chunks: Iterable[bytes]) -> ScanVerdict:
        """Stream ``chunks`` to clamd and return its verdict; raises ScannerError on trouble."""
        engine = self.version()
        with self._connect() as conn:
            try:
                conn.sendall(b"zINSTREAM\0")
                for chunk in chunks:
                    for start in range(0, len(chunk), _CHUNK):
                        piece = chunk[start : start + _CHUNK]
                        conn.sendall(struct.pack("!L", len(piece)) + piece)
                conn.sendall(struct.pack("!L", 0))
                reply = _read_reply(conn)
            except OSError as error:
                # clamd closes the socket mid-stream when StreamMaxLength is exceeded.
                raise ScannerError(f"clamd stream failed: {type(error).__name__}") from error
        return _verdict(reply, engine)

    def _command(self, command: bytes) -> str:
        with self._connect() as conn:
            try:
                conn.sendall(b"z" + command + b"\0")
                return _read_reply(conn)
            except OSError as error:
                raise ScannerError(f"clamd {command.decode()} failed") from error

    def _connect(self) -> socket.socket:
        conn = socket.socket(self._family, socket.SOCK_STREAM)
        conn.settimeout(self._timeout)
        try:
            conn.connect(self._target)
        except OSError as error:
            conn.close()
            raise ScannerError(f"clamd unreachable: {type(error).__name__}") from error
        return conn


def _read_reply(conn: socket.socket) -> str:
    buffer = bytearray()
    while not buffer.endswith(b"\0"):
        data = conn.recv(4096)
        if not data:
            break
        buffer += data
        if len(buffer) > 64 * 1024:
            raise ScannerError("clamd reply too long")
    return bytes(buffer).rstrip(b"\0").decode("utf-8", "replace").strip()


def _verdict(reply: str, engine: str) -> ScanVerdict:
    # Replies look like "stream: OK", "stream: Eicar-Sig FOUND" or "... ERROR".
    _, _, status = reply.partition(": ")
    if status == "OK":
        return ScanVerdict(infected=False, signature=None, engine=engine)
    if status.endswith(" FOUND"):
        return ScanVerdict(infected=True, signature=status[: -len(" FOUND")], engine=engine)
    if "size limit exceeded" in reply:
        raise ScannerError("document larger than clamd's StreamMaxLength")
    raise ScannerError("clamd could not scan the stream")
