"""The shipped deploy/nginx/medvault.conf in front of a real vault (issue 9, defect 12).

Debian's nginx runs as a child process with the shipped site file (see
tests/support/nginx.py for the few substitutions a test needs), and the vault runs
as ``medvault serve`` trusting X-Forwarded-For from 127.0.0.1 only, as the README
tells operators to configure it. The client connects from 127.0.0.2, so the address
nginx reports is distinguishable from the address the vault sees nginx at.
"""

from __future__ import annotations

import hashlib
import secrets
import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.ops.test_server_limits import recorded_client_ip
from tests.support.factories import patient_payload, pdf_bytes
from tests.support.nginx import NginxProxy, nginx_binary
from tests.support.raw_http import dribble_head_until_closed, head_for, raw_request
from tests.support.vault_process import VaultProcess
from tests.uploads.support import metadata

CLIENT_ADDRESS = "127.0.0.2"  # any 127/8 address is loopback on Linux
HEADER_TIMEOUT = "2s"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VaultProcess, NginxProxy]]:
    nginx_binary()  # skip locally / fail in CI before starting anything
    folder = tmp_path_factory.mktemp("nginx")
    vault = VaultProcess(
        folder / "data",
        log_path=folder / "serve.log",
        env={"MEDVAULT_TRUSTED_PROXIES": "127.0.0.1"},
    )
    with vault:
        proxy = NginxProxy(
            folder / "nginx",
            upstream_port=vault.port,
            overrides={"client_header_timeout": HEADER_TIMEOUT},
        )
        with proxy:
            yield vault, proxy


@pytest.fixture(scope="module")
def token(stack: tuple[VaultProcess, NginxProxy]) -> str:
    return stack[0].create_token("nginx")


def proxied(proxy: NginxProxy, token: str | None = None) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=CLIENT_ADDRESS)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=proxy.url, transport=transport, headers=headers, timeout=60)


def test_uploads_and_downloads_stream_through(
    stack: tuple[VaultProcess, NginxProxy], token: str
) -> None:
    _, proxy = stack
    content = pdf_bytes(3 * 1024 * 1024)  # over nginx's 1 MiB default: the upload route allows it

    def body() -> Iterator[bytes]:  # chunked, as a streaming client sends it
        for start in range(0, len(content), 256 * 1024):
            yield content[start : start + 256 * 1024]

    with proxied(proxy, token) as client:
        patient = client.post("/api/v1/patients", json=patient_payload())
        assert patient.status_code == 201, patient.text
        uploaded = client.post(
            "/api/v1/documents",
            params={
                "patient_id": patient.json()["id"],
                "document_type": "11502-2",
                "filename": "big.pdf",
            },
            content=body(),
            headers={"content-type": "application/pdf"},
        )
        assert uploaded.status_code == 201, uploaded.text
        document = uploaded.json()["id"]
        with client.stream("GET", f"/api/v1/documents/{document}/content") as download:
            assert download.status_code == 200
            digest = hashlib.sha256()
            for chunk in download.iter_bytes():
                digest.update(chunk)
        assert digest.hexdigest() == hashlib.sha256(content).hexdigest()

        link = client.post(f"/api/v1/documents/{document}/download-url", json={})
        assert link.status_code == 201, link.text
        url = link.json()["url"]
        signed_path = url[url.index("/api/v1/download/") :]
    with proxied(proxy) as anonymous:
        shared = anonymous.get(signed_path)
        assert shared.status_code == 200
        assert shared.content == content
    signed_token = signed_path.rsplit("/", 1)[-1].split("?")[0]
    # nginx's own access log obeys the same rule as medvault's: no link credential.
    log = proxy.access_log()
    assert "/api/v1/download/<signed>" in log
    assert signed_token not in log


def test_a_resumable_upload_goes_through(
    stack: tuple[VaultProcess, NginxProxy], token: str
) -> None:
    """tus through nginx: its PATCH, HEAD and creation, with a request over 1 MiB."""
    _, proxy = stack
    content = pdf_bytes(3 * 1024 * 1024 + 11)
    with proxied(proxy, token) as client:
        patient = client.post("/api/v1/patients", json=patient_payload()).json()["id"]
        meta = {"patient_id": patient, "document_type": "11502-2", "filename": "scan.pdf"}
        created = client.post(
            "/api/v1/uploads",
            headers={
                "Tus-Resumable": "1.0.0",
                "Upload-Length": str(len(content)),
                "Upload-Metadata": metadata(**meta),
            },
        )
        assert created.status_code == 201, created.text
        url = created.headers["Location"]
        offset = 0
        for size in (2 * 1024 * 1024, len(content)):
            piece = content[offset:size]
            sent = client.patch(
                url,
                headers={
                    "Tus-Resumable": "1.0.0",
                    "Upload-Offset": str(offset),
                    "Content-Type": "application/offset+octet-stream",
                },
                content=piece,
            )
            assert sent.status_code == 204, sent.text
            offset = int(sent.headers["Upload-Offset"])
            status = client.head(url, headers={"Tus-Resumable": "1.0.0"})
            assert status.headers["Upload-Offset"] == str(offset)
        document = sent.headers["Medvault-Document-Id"]
        stored = client.get(f"/api/v1/documents/{document}/content")
        assert hashlib.sha256(stored.content).digest() == hashlib.sha256(content).digest()
    # The portal's resumable route takes a request over 1 MiB too: the vault answers
    # (no session: 401), not nginx's body limit (413).
    with proxied(proxy) as anonymous:
        portal = anonymous.patch(
            "/upload/resumable/00000000-0000-4000-8000-000000000000",
            headers={
                "Tus-Resumable": "1.0.0",
                "Upload-Offset": "0",
                "Content-Type": "application/offset+octet-stream",
            },
            content=content[: 2 * 1024 * 1024],
        )
        assert portal.status_code == 401, portal.text


def test_a_100_kb_head_is_refused_by_nginx(stack: tuple[VaultProcess, NginxProxy]) -> None:
    vault, proxy = stack
    answer = raw_request(
        proxy.port,
        head_for("GET", "/healthz", {"X-Padding": "a" * 100_000}),
        source=CLIENT_ADDRESS,
    )
    assert 400 <= answer.status < 500
    assert "X-Padding" not in vault.log_tail()


def test_a_spoofed_forwarded_for_is_replaced_by_the_real_address(
    stack: tuple[VaultProcess, NginxProxy],
) -> None:
    vault, proxy = stack
    marker = f"xff-nginx-{secrets.token_hex(6)}"
    with proxied(proxy) as client:
        answer = client.post(
            "/api/v1/auth/token",
            data={"username": marker, "password": "wrong-password-x", "grant_type": "password"},
            headers={"User-Agent": marker, "X-Forwarded-For": "203.0.113.9"},
        )
    assert answer.status_code == 401
    # Not the spoofed address, and not nginx's own 127.0.0.1: the client's.
    assert recorded_client_ip(vault.data_dir, marker) == CLIENT_ADDRESS


def test_a_slowloris_head_is_closed_by_nginx(stack: tuple[VaultProcess, NginxProxy]) -> None:
    _, proxy = stack
    sock = socket.create_connection(
        ("127.0.0.1", proxy.port), timeout=5, source_address=(CLIENT_ADDRESS, 0)
    )
    try:
        assert dribble_head_until_closed(sock), "nginx kept a never-ending request head open"
    finally:
        sock.close()


def test_a_json_body_over_the_cap_is_413_at_nginx(stack: tuple[VaultProcess, NginxProxy]) -> None:
    vault, proxy = stack
    log_before = len(vault.log_tail(10**9))
    with proxied(proxy) as client:
        answer = client.post(
            "/api/v1/auth/refresh",
            content=b'{"refresh_token":"' + b"0" * (2 * 1024 * 1024) + b'"}',
            headers={"content-type": "application/json"},
        )
    assert answer.status_code == 413
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"] == "urn:medvault:problem:payload-too-large"
    # nginx refused it: the vault never saw the request.
    assert "/api/v1/auth/refresh" not in vault.log_tail(10**9)[log_before:]
