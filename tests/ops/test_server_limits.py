"""``medvault serve`` as a real process: body caps, head limits, proxy trust (issue 9).

Defects 5 and 12. The vault runs as an operator runs it (``python -m medvault.cli
serve``), so the limits set on uvicorn and the process's memory are the real ones.
"""

from __future__ import annotations

import secrets
import socket
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.raw_http import (
    dribble_head_until_closed,
    head_for,
    raw_request,
    read_response,
)
from tests.support.vault_process import VaultProcess

MiB = 1024 * 1024
TOO_LARGE = "urn:medvault:problem:payload-too-large"
HEADS_TOO_LARGE = "urn:medvault:problem:headers-too-large"
HEAD_TIMEOUT_SECONDS = 1.5


@pytest.fixture(scope="module")
def vault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultProcess]:
    folder = tmp_path_factory.mktemp("server-limits")
    process = VaultProcess(
        folder / "data",
        log_path=folder / "serve.log",
        env={"MEDVAULT_SERVER_HEADER_TIMEOUT_SECONDS": str(HEAD_TIMEOUT_SECONDS)},
    )
    with process:
        yield process


@pytest.fixture(scope="module")
def admin_token(vault: VaultProcess) -> str:
    return vault.create_token("limits")


def rss_mib(vault: VaultProcess) -> float:
    return vault.rss_bytes() / MiB


def zeros(total: int, chunk: int = 64 * 1024) -> Iterator[bytes]:
    """Exactly ``total`` bytes of a JSON string that never closes: ``{"refresh_token":"000…``."""
    prefix = b'{"refresh_token":"'
    yield prefix
    remaining = total - len(prefix)
    while remaining > 0:
        size = min(chunk, remaining)
        yield b"0" * size
        remaining -= size


def chunked(parts: Iterator[bytes]) -> Iterator[bytes]:
    for part in parts:
        yield f"{len(part):x}\r\n".encode() + part + b"\r\n"
    yield b"0\r\n\r\n"


def test_huge_json_bodies_are_cut_with_flat_memory(vault: VaultProcess, admin_token: str) -> None:
    json_head = {"Content-Type": "application/json"}
    auth = {"Authorization": f"Bearer {admin_token}"}
    # Warm both routes up, so first-use allocations do not count as growth.
    for path, extra in (("/api/v1/auth/refresh", {}), ("/api/v1/patients", auth)):
        warm = raw_request(
            vault.port,
            head_for("POST", path, {**json_head, **extra, "Content-Length": "2"}),
            [b"{}"],
        )
        assert warm.status == 422
    before = rss_mib(vault)

    answers = [
        raw_request(
            vault.port,
            head_for("POST", path, {**json_head, **extra, "Content-Length": str(64 * MiB)}),
            zeros(64 * MiB),
        )
        for path, extra in (("/api/v1/auth/refresh", {}), ("/api/v1/patients", auth))
    ]
    # No Content-Length at all: only counting the streamed bytes can stop it.
    answers.append(
        raw_request(
            vault.port,
            head_for("POST", "/api/v1/auth/refresh", {**json_head, "Transfer-Encoding": "chunked"}),
            chunked(zeros(64 * MiB)),
        )
    )
    growth = rss_mib(vault) - before

    for answer in answers:
        assert answer.status == 413, answer.body[:300]
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["type"] == TOO_LARGE
        assert answer.sent_bytes < 64 * MiB  # refused long before the end
    print(f"\nRSS growth over three 64 MiB bodies: {growth:.1f} MiB")
    assert growth < 16, f"RSS grew by {growth:.1f} MiB"


def test_a_spoofed_forwarded_for_is_ignored_without_trusted_proxies(vault: VaultProcess) -> None:
    marker = f"xff-probe-{secrets.token_hex(6)}"
    body = f"username={marker}&password=wrong-password-x&grant_type=password".encode()
    answer = raw_request(
        vault.port,
        head_for(
            "POST",
            "/api/v1/auth/token",
            {
                "Content-Type": "application/x-www-form-urlencoded",
                "Content-Length": str(len(body)),
                "User-Agent": marker,
                "X-Forwarded-For": "203.0.113.9",
            },
        ),
        [body],
    )
    assert answer.status == 401
    assert recorded_client_ip(vault.data_dir, marker) == "127.0.0.1"


def recorded_client_ip(data_dir: Path, user_agent: str) -> str:
    with sqlite3.connect(data_dir / "clinical.db") as db:
        row = db.execute(
            "SELECT client_ip FROM audit_events WHERE action = 'auth.login' AND user_agent = ?",
            (user_agent,),
        ).fetchone()
    assert row is not None, "the failed login was not audited"
    return str(row[0])


def test_a_100_kb_head_is_refused(vault: VaultProcess) -> None:
    answer = raw_request(
        vault.port, head_for("GET", "/healthz", {"X-Padding": "a" * 100_000}), timeout=30
    )
    # Refused by the server while the head is incomplete, or by the app once it is
    # whole (if it arrived in one read): the same problem either way.
    assert answer.status == 431
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"] == HEADS_TOO_LARGE


def endless_header(total: int, chunk: int = 64 * 1024) -> Iterator[bytes]:
    for _ in range(total // chunk):
        yield b"a" * chunk


def test_a_never_ending_header_line_is_refused_with_flat_memory(vault: VaultProcess) -> None:
    """One header value that never ends: the parser hands a header over only once it is
    whole, so only counting the bytes of the incomplete head stops it."""
    warm = raw_request(vault.port, head_for("GET", "/healthz", {}))
    assert warm.status == 200
    before = rss_mib(vault)
    answer = raw_request(
        vault.port,
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Endless: ",
        endless_header(64 * MiB),
    )
    growth = rss_mib(vault) - before
    assert answer.status == 431, answer.body[:300]
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"] == HEADS_TOO_LARGE
    assert answer.sent_bytes < 64 * MiB  # refused long before the end
    assert growth < 16, f"RSS grew by {growth:.1f} MiB"


def test_a_head_just_under_the_limit_is_served(vault: VaultProcess) -> None:
    """Dribbled in small pieces, so the server counts an incomplete head the whole way."""
    sock = socket.create_connection(("127.0.0.1", vault.port), timeout=10)
    try:
        head = head_for("GET", "/healthz", {"X-Padding": "a" * 15_000})
        for start in range(0, len(head), 1000):
            sock.sendall(head[start : start + 1000])
        status, _, _ = read_response(sock)
    finally:
        sock.close()
    assert status == 200


def test_a_slow_body_is_not_cut_by_the_head_timeout(vault: VaultProcess) -> None:
    def late() -> Iterator[bytes]:
        time.sleep(HEAD_TIMEOUT_SECONDS * 2)
        yield b"{}"

    answer = raw_request(
        vault.port,
        head_for(
            "POST",
            "/api/v1/auth/refresh",
            {"Content-Type": "application/json", "Content-Length": "2"},
        ),
        late(),
    )
    assert answer.status == 422  # the app answered the body, which came after the timeout


def test_the_next_head_on_a_kept_alive_connection_is_timed_too(vault: VaultProcess) -> None:
    sock = socket.create_connection(("127.0.0.1", vault.port), timeout=5)
    try:
        sock.sendall(head_for("GET", "/healthz", {}))
        status, headers, _ = read_response(sock)
        assert status == 200
        assert headers.get("connection") != "close"
        # Idle for longer than the head timeout: that is keep-alive, not a slow head.
        time.sleep(HEAD_TIMEOUT_SECONDS * 1.5)
        sock.sendall(head_for("GET", "/healthz", {}))
        status, _, _ = read_response(sock)
        assert status == 200
        assert dribble_head_until_closed(sock), "the second request's head was never timed"
    finally:
        sock.close()


def test_pipelined_requests_are_all_answered(vault: VaultProcess) -> None:
    sock = socket.create_connection(("127.0.0.1", vault.port), timeout=10)
    try:
        sock.sendall(head_for("GET", "/healthz", {}) * 3)
        received = b""
        while received.count(b"HTTP/1.1 ") < 3:
            chunk = sock.recv(65536)
            assert chunk, f"closed after {received.count(b'HTTP/1.1 ')} responses"
            received += chunk
    finally:
        sock.close()
    assert received.count(b"HTTP/1.1 200 OK") == 3


@pytest.mark.parametrize("length", ["abc", "-1", "1, 2"])
def test_a_malformed_content_length_is_a_400(vault: VaultProcess, length: str) -> None:
    answer = raw_request(
        vault.port,
        head_for("POST", "/api/v1/auth/refresh", {"Content-Length": length}),
        [b"{}"],
    )
    assert answer.status == 400


def test_a_slowloris_head_is_closed(vault: VaultProcess) -> None:
    """One header line every 0.3 s: without a head timeout this socket lives forever."""
    sock = socket.create_connection(("127.0.0.1", vault.port), timeout=5)
    try:
        assert dribble_head_until_closed(sock), "the server kept a never-ending request head open"
    finally:
        sock.close()
    # Honest clients are unaffected.
    ok = raw_request(vault.port, head_for("GET", "/healthz", {}))
    assert ok.status == 200
