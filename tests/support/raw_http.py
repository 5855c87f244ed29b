"""HTTP/1.1 over a bare socket, for attacks that an HTTP client library would not send.

A body is sent from a second thread while the response is read, because a server
that refuses early answers (and closes) long before a 64 MiB body has been written.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes
    sent_bytes: int = 0
    send_error: str | None = field(default=None)

    def json(self) -> Any:
        return json.loads(self.body)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response head: {data[:200]!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        try:
            chunk = sock.recv(65536)
        except OSError:
            break
        if not chunk:
            break
        rest += chunk
    return status, headers, rest[:length]


def raw_request(
    port: int,
    head: bytes,
    body: Iterable[bytes] = (),
    *,
    source: str | None = None,
    timeout: float = 60.0,
) -> RawResponse:
    """Send ``head`` then stream ``body`` while reading the response."""
    sock = socket.create_connection(
        ("127.0.0.1", port), timeout=timeout, source_address=(source, 0) if source else None
    )
    sent = 0
    error: str | None = None

    def send_body() -> None:
        nonlocal sent, error
        try:
            for chunk in body:
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError as exc:
            error = type(exc).__name__  # the server stopped reading: expected when refused

    try:
        sock.sendall(head)
        sender = threading.Thread(target=send_body, daemon=True)
        sender.start()
        status, headers, payload = read_response(sock)
        with contextlib.suppress(OSError):  # the server may have closed first
            sock.shutdown(socket.SHUT_RDWR)  # also stops the sender
        sender.join(timeout=timeout)
    finally:
        sock.close()
    return RawResponse(status, headers, payload, sent, error)


def head_for(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: 127.0.0.1",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the other end has closed (or reset) the connection, without blocking."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True


def dribble_head_until_closed(sock: socket.socket, *, lines: int = 100) -> bool:
    """Slowloris: send a request head one header line every 0.3 s (30 s in all).

    Returns whether the server closed the connection before the head was ever finished.
    """
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    for line in range(lines):
        time.sleep(0.3)
        if closed_by_peer(sock):
            return True
        try:
            sock.sendall(f"X-Slow-{line}: 1\r\n".encode())
        except OSError:
            return True
    return False
