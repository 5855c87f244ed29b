"""Security headers, CORS (off unless allowlisted) and TLS for `medvault serve`."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi import FastAPI
from fastapi.testclient import TestClient

from medvault.app import create_app
from medvault.runtime import Runtime, build_runtime
from tests.support.backends import Backend
from tests.support.services import free_port


def test_strict_headers_on_api_and_error_responses(client: TestClient) -> None:
    for response in (client.get("/api/v1/documents"), client.get("/api/v1/documents/nope")):
        headers = response.headers
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["content-security-policy"].startswith("default-src 'none'")
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["cache-control"] == "no-store"
        assert "strict-transport-security" not in headers  # plain HTTP


def test_hsts_only_over_https(app: FastAPI) -> None:
    with TestClient(app, base_url="https://testserver") as secure:
        response = secure.get("/healthz")
    assert response.headers["strict-transport-security"].startswith("max-age=63072000")


def test_api_docs_get_only_the_exception_they_need(anon_client: TestClient) -> None:
    csp = anon_client.get("/docs").headers["content-security-policy"]
    assert "script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net" in csp
    assert "frame-ancestors 'none'" in csp
    strict = anon_client.get("/openapi.json").headers["content-security-policy"]
    assert "script-src" not in strict


def test_cors_is_off_by_default(anon_client: TestClient) -> None:
    preflight = anon_client.options(
        "/api/v1/documents",
        headers={"Origin": "https://portal.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    simple = anon_client.get("/healthz", headers={"Origin": "https://portal.example"})
    assert "access-control-allow-origin" not in simple.headers


@pytest.fixture
def cors_app(backend: Backend) -> Iterator[FastAPI]:
    settings = backend.settings.model_copy(update={"cors_origins": ("https://portal.example",)})
    runtime: Runtime = build_runtime(settings, run_migrations=True)
    yield create_app(runtime=runtime)
    runtime.close()


def test_cors_allowlist(cors_app: FastAPI) -> None:
    with TestClient(cors_app) as anon:
        allowed = anon.options(
            "/api/v1/documents",
            headers={
                "Origin": "https://portal.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://portal.example"
        assert "access-control-allow-credentials" not in allowed.headers
        other = anon.options(
            "/api/v1/documents",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert "access-control-allow-origin" not in other.headers


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def test_serve_speaks_tls(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDVAULT_")}
    env.update(MEDVAULT_DATA_DIR=str(tmp_path / "data"), MEDVAULT_PORT=str(port))
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "medvault.cli",
            "serve",
            "--ssl-certfile",
            str(cert),
            "--ssl-keyfile",
            str(key),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        response = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and server.poll() is None:
            try:
                response = httpx.get(f"https://127.0.0.1:{port}/healthz", verify=trust)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert response is not None, server.stderr.read() if server.stderr else b""
        assert response.status_code == 200
        assert response.headers["strict-transport-security"].startswith("max-age=")
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_serve_refuses_half_a_tls_configuration(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDVAULT_")}
    env["MEDVAULT_DATA_DIR"] = str(tmp_path / "data")
    done = subprocess.run(
        [sys.executable, "-m", "medvault.cli", "serve", "--ssl-certfile", str(cert)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "--ssl-keyfile" in done.stderr
