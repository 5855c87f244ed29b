"""What a resumable upload leaves at rest: ciphertext only, never a reused nonce, and
the exact bytes whatever the requests' sizes and wherever they end."""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import aead
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medvault.app import create_app
from medvault.crypto import envelope
from medvault.runtime import Runtime, build_runtime
from medvault.uploads import appending
from tests.support.backends import Backend, SettingsFactory
from tests.support.factories import create_patient, pdf_bytes
from tests.uploads.support import checksum, create, head, patch, send_in_pieces

MARKER = b"SYNTHETIC-CLINICAL-MARKER-"


def at_rest(runtime: Runtime, data_dir: Path) -> Iterator[tuple[str, bytes]]:
    """Every byte the vault keeps: files under its data folder (blobs, temp files, the
    SQLite databases) and every object in its blob store."""
    for path in data_dir.rglob("*"):
        if path.is_file():
            yield str(path), path.read_bytes()
    for info in runtime.blobs.list_blobs():
        yield info.key, b"".join(runtime.blobs.read(info.key))


def test_no_plaintext_at_rest_while_an_upload_is_paused(
    client: TestClient, runtime: Runtime
) -> None:
    content = b"%PDF-1.7\n" + MARKER * 40_000  # ~1 MiB
    patient = create_patient(client)
    url = create(client, patient, len(content)).headers["Location"]
    # Paused halfway, mid-segment, after requests that end at odd places.
    half = len(content) // 2 + 333
    send_in_pieces(client, url, content[:half], [70_001, 5, 250_000])
    assert head(client, url).headers["Upload-Offset"] == str(half)
    seen = 0
    for where, stored in at_rest(runtime, runtime.settings.data_dir):
        seen += 1
        assert MARKER not in stored, where
        assert b"%PDF" not in stored or where.endswith((".db", ".db-wal")), where
    assert seen > 0
    done = patch(client, url, half, content[half:])
    assert done.status_code == 204
    for where, stored in at_rest(runtime, runtime.settings.data_dir):
        assert MARKER not in stored, where


class RecordingAESGCM:
    """AESGCM (which cannot be subclassed) that notes every (key, nonce) it seals with."""

    used: list[tuple[bytes, bytes]] = []

    def __init__(self, key: bytes) -> None:
        self._aead = aead.AESGCM(key)
        self._key = bytes(key)

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        self.used.append((self._key, bytes(nonce)))
        return self._aead.encrypt(nonce, data, associated_data)

    def encrypt_into(self, nonce: bytes, data: Any, associated_data: bytes | None, buf: Any) -> int:
        self.used.append((self._key, bytes(nonce)))
        return self._aead.encrypt_into(nonce, data, associated_data, buf)

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        return self._aead.decrypt(nonce, data, associated_data)


def test_every_nonce_under_a_key_is_used_once(
    client: TestClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests ending mid-segment, small chunks rewritten, a refused request retried,
    and the completion: across all of it no (key, nonce) pair repeats."""
    RecordingAESGCM.used = []
    monkeypatch.setattr(envelope, "AESGCM", RecordingAESGCM)
    segment = runtime.settings.segment_size
    data = pdf_bytes(3 * appending.MERGE_BELOW + 12_345)
    patient = create_patient(client)
    url = create(client, patient, len(data)).headers["Location"]
    offset = 0
    # Mid-segment ends, single bytes, exact segment ends, small chunks merged again and
    # again, then a chunk above the merge threshold.
    for size in (1, segment - 2, 1, segment, segment + 1, 7, 100_000, appending.MERGE_BELOW):
        assert patch(client, url, offset, data[offset : offset + size]).status_code == 204
        offset += size
    # The same bytes sent twice, the first time refused (checksum): resealed, fresh key.
    piece = data[offset : offset + 50_000]
    wrong = patch(client, url, offset, piece, Upload_Checksum=checksum("sha256", b"x"))
    assert wrong.status_code == 460
    assert patch(client, url, offset, piece).status_code == 204
    offset += len(piece)
    done = patch(client, url, offset, data[offset:])
    assert done.status_code == 204
    got = client.get(f"/api/v1/documents/{done.headers['Medvault-Document-Id']}/content")
    assert hashlib.sha256(got.content).digest() == hashlib.sha256(data).digest()
    used = RecordingAESGCM.used
    keys = {key for key, _ in used}
    assert len(keys) >= 10  # chunks, rewrites and the document each had their own key
    assert len(used) == len(set(used)), "a (key, nonce) pair was used twice"


@pytest.fixture
def small_segments(backend: Backend, tmp_path: Path) -> Iterator[FastAPI]:
    """The SQLite backend with 4 KiB segments, so boundaries come every few requests."""
    settings = backend.settings.model_copy(update={"segment_size": 4096})
    runtime = build_runtime(settings, run_migrations=True)
    try:
        yield create_app(runtime=runtime)
    finally:
        runtime.close()


SEGMENT = 4096
EDGES = [
    [SEGMENT],
    [SEGMENT - 1, 1],
    [SEGMENT + 1, SEGMENT - 1],
    [1] * 9 + [SEGMENT * 3],
    [SEGMENT * 2, 1, SEGMENT - 1, SEGMENT, 1],
]


@pytest.mark.parametrize("pieces", EDGES, ids=[str(i) for i in range(len(EDGES))])
def test_segment_boundaries(small_segments: FastAPI, api_token: str, pieces: list[int]) -> None:
    with TestClient(small_segments) as client:
        client.headers["Authorization"] = f"Bearer {api_token}"
        roundtrip(client, pdf_bytes(sum(pieces)), pieces)


def roundtrip(client: TestClient, data: bytes, pieces: list[int]) -> None:
    url = create(client, create_patient(client), len(data)).headers["Location"]
    offset = 0
    for size in pieces:
        answer = patch(client, url, offset, data[offset : offset + size])
        assert answer.status_code == 204, answer.text
        offset += size
    document = answer.headers["Medvault-Document-Id"]
    got = client.get(f"/api/v1/documents/{document}/content")
    assert got.content == data


@st.composite
def cut_file(draw: st.DrawFn) -> tuple[int, list[int]]:
    size = draw(st.integers(min_value=300, max_value=3 * 1024 * 1024))
    cuts = draw(st.lists(st.integers(1, size - 1), max_size=24, unique=True))
    bounds = [0, *sorted(cuts), size]
    return size, [b - a for a, b in itertools.pairwise(bounds)]


@pytest.mark.parametrize("backend", ["sqlite-fs"], indirect=True)
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(shape=cut_file())
def test_any_request_sizes_give_the_exact_file(
    small_segments: FastAPI, api_token: str, shape: tuple[int, list[int]]
) -> None:
    size, pieces = shape
    with TestClient(small_segments) as client:
        client.headers["Authorization"] = f"Bearer {api_token}"
        roundtrip(client, pdf_bytes(size), pieces)


def test_one_64_mib_request_then_single_bytes(
    make_settings: SettingsFactory, api_token: str
) -> None:
    runtime = build_runtime(make_settings(max_upload_bytes=65 * 1024 * 1024), run_migrations=True)
    try:
        with TestClient(create_app(runtime=runtime)) as client:
            client.headers["Authorization"] = f"Bearer {api_token}"
            one_big_request_then_bytes(client)
    finally:
        runtime.close()


def one_big_request_then_bytes(client: TestClient) -> None:
    data = pdf_bytes(64 * 1024 * 1024 + 3)
    url = create(client, create_patient(client), len(data)).headers["Location"]
    big = 64 * 1024 * 1024
    assert patch(client, url, 0, data[:big]).status_code == 204
    for offset in range(big, len(data)):
        answer = patch(client, url, offset, data[offset : offset + 1])
        assert answer.status_code == 204
    got = client.get(f"/api/v1/documents/{answer.headers['Medvault-Document-Id']}/content")
    assert hashlib.sha256(got.content).digest() == hashlib.sha256(data).digest()


def test_concurrent_requests_never_interleave(client: TestClient) -> None:
    """Two requests at one offset: one appends, the other is refused (423 while the
    first holds the upload, 409 once it moved the offset); the bytes are exact."""
    data = pdf_bytes(6 * 1024 * 1024)
    url = create(client, create_patient(client), len(data)).headers["Location"]
    halves = {"a": data[: 4 * 1024 * 1024], "b": pdf_bytes(4 * 1024 * 1024)}
    answers: dict[str, int] = {}
    start = threading.Barrier(2)

    def send(name: str) -> None:
        start.wait()
        answers[name] = patch(client, url, 0, halves[name]).status_code

    threads = [threading.Thread(target=send, args=(name,)) for name in halves]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers.values()) in ([204, 409], [204, 423]), answers
    winner = next(name for name, status in answers.items() if status == 204)
    offset = int(head(client, url).headers["Upload-Offset"])
    assert offset == 4 * 1024 * 1024
    rest = data[offset:]
    first = halves[winner]
    done = patch(client, url, offset, rest)
    got = client.get(f"/api/v1/documents/{done.headers['Medvault-Document-Id']}/content")
    assert got.content == first + rest
