"""Helpers for speaking tus to the app in tests."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import httpx
from fastapi.testclient import TestClient

TUS = {"Tus-Resumable": "1.0.0"}
PATCH_TYPE = "application/offset+octet-stream"


def metadata(**fields: str) -> str:
    return ",".join(
        f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in fields.items()
    )


def create(
    client: TestClient | httpx.Client,
    patient_id: str,
    length: int | None,
    *,
    headers: dict[str, str] | None = None,
    content: bytes | None = None,
    **fields: str,
) -> httpx.Response:
    sent: dict[str, str] = {
        **TUS,
        "Upload-Metadata": metadata(
            **{"patient_id": patient_id, "document_type": "11502-2", "filename": "scan.pdf"}
            | fields
        ),
    }
    if length is None:
        sent["Upload-Defer-Length"] = "1"
    else:
        sent["Upload-Length"] = str(length)
    if content is not None:
        sent["Content-Type"] = PATCH_TYPE
    sent.update(headers or {})
    return client.post("/api/v1/uploads", headers=sent, content=content)


def patch(
    client: TestClient | httpx.Client,
    url: str,
    offset: int,
    data: bytes,
    **headers: str,
) -> httpx.Response:
    sent = {**TUS, "Upload-Offset": str(offset), "Content-Type": PATCH_TYPE}
    sent.update({key.replace("_", "-"): value for key, value in headers.items()})
    return client.patch(url, headers=sent, content=data)


def head(client: TestClient | httpx.Client, url: str) -> httpx.Response:
    return client.head(url, headers=TUS)


def checksum(algorithm: str, data: bytes) -> str:
    return f"{algorithm} {base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"


def send_in_pieces(
    client: TestClient | httpx.Client, url: str, data: bytes, sizes: list[int], **kw: Any
) -> httpx.Response:
    """PATCH ``data`` in pieces of the given sizes (cycled); returns the last answer."""
    offset, index = 0, 0
    answer: httpx.Response | None = None
    while offset < len(data):
        size = max(1, sizes[index % len(sizes)])
        piece = data[offset : offset + size]
        answer = patch(client, url, offset, piece, **kw)
        assert answer.status_code == 204, answer.text
        offset += len(piece)
        assert int(answer.headers["Upload-Offset"]) == offset
        index += 1
    assert answer is not None
    return answer
