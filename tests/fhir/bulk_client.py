"""A small, real FHIR Bulk Data client, as an EHR's integration engine would run it.

Kick-off with ``Prefer: respond-async``, poll the status URL honouring ``Retry-After``
(exponential backoff when the server gives none), download every NDJSON file of the
manifest as a stream, and fetch each current DocumentReference's attachment URL with
the same token, checking its SHA-256 against the one the resource states. It speaks
plain HTTP through httpx and knows nothing of the vault's internals:

    python -m tests.fhir.bulk_client http://127.0.0.1:8000/fhir "$TOKEN"
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

SHA256_EXTENSION = "urn:medvault:fhir:attachment-sha256"
FIRST_DELAY = 0.25
MAX_DELAY = 10.0


class BulkExportError(Exception):
    """The server answered something the Bulk Data IG does not allow here."""


@dataclass
class ExportResult:
    status_url: str
    manifest: dict[str, Any]
    resources: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    polls: int = 0
    waited: float = 0.0
    attachments_checked: int = 0


def kick_off(
    client: httpx.Client, base: str, token: str, *, level: str = "patient", **params: str
) -> str:
    """Start an export; returns the status URL (the Content-Location)."""
    path = "/$export" if level == "system" else "/Patient/$export"
    response = client.get(
        base + path,
        params=params,
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/fhir+json",
            "Prefer": "respond-async",
        },
    )
    if response.status_code != 202:
        raise BulkExportError(f"kick-off answered {response.status_code}: {response.text}")
    return str(response.headers["Content-Location"])


def poll(
    client: httpx.Client, status_url: str, token: str, *, timeout: float = 120.0
) -> tuple[dict[str, Any], int, float]:
    """Poll until the manifest; returns it, how many polls, and how long was waited."""
    delay, polls, waited = FIRST_DELAY, 0, 0.0
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(status_url, headers={"Authorization": f"Bearer {token}"})
        polls += 1
        if response.status_code == 200:
            return dict(response.json()), polls, waited
        if response.status_code != 202:
            raise BulkExportError(f"status answered {response.status_code}: {response.text}")
        retry_after = response.headers.get("Retry-After")
        wait = float(retry_after) if retry_after and retry_after.isdigit() else delay
        delay = min(delay * 2, MAX_DELAY)
        if time.monotonic() + wait > deadline:
            raise BulkExportError(f"no manifest within {timeout} s ({polls} polls)")
        time.sleep(wait)
        waited += wait


def download(client: httpx.Client, url: str, token: str) -> list[dict[str, Any]]:
    """One NDJSON file, streamed line by line."""
    resources = []
    with client.stream("GET", url, headers={"Authorization": f"Bearer {token}"}) as response:
        if response.status_code != 200:
            response.read()
            raise BulkExportError(f"{url} answered {response.status_code}: {response.text}")
        kind = response.headers.get("content-type", "")
        if not kind.startswith("application/fhir+ndjson"):
            raise BulkExportError(f"{url} came as {kind}, not application/fhir+ndjson")
        for line in response.iter_lines():
            if line:
                resources.append(json.loads(line))
    return resources


def check_attachments(client: httpx.Client, resources: list[dict[str, Any]], token: str) -> int:
    """Fetch every current DocumentReference's attachment; its SHA-256 must match."""
    checked = 0
    for resource in resources:
        if resource.get("status") != "current":
            continue  # superseded versions are served too, but one check per document suffices
        attachment = resource["content"][0]["attachment"]
        url = attachment["url"]
        if not url.startswith(("http://", "https://")):
            raise BulkExportError(f"attachment URL {url} is not absolute")
        wanted = next(
            e["valueBase64Binary"] for e in attachment["extension"] if e["url"] == SHA256_EXTENSION
        )
        digest = hashlib.sha256()
        with client.stream("GET", url, headers={"Authorization": f"Bearer {token}"}) as response:
            if response.status_code != 200:
                raise BulkExportError(f"{url} answered {response.status_code}")
            for chunk in response.iter_bytes():
                digest.update(chunk)
        if base64.b64encode(digest.digest()).decode() != wanted:
            raise BulkExportError(f"{url}: the bytes do not match the stated SHA-256")
        checked += 1
    return checked


def run(
    client: httpx.Client,
    base: str,
    token: str,
    *,
    level: str = "patient",
    attachments: bool = True,
    **params: str,
) -> ExportResult:
    """The whole flow: kick-off, poll, download, and (optionally) check attachments."""
    status_url = kick_off(client, base, token, level=level, **params)
    manifest, polls, waited = poll(client, status_url, token)
    if manifest.get("requiresAccessToken") is not True:
        raise BulkExportError("the manifest must say requiresAccessToken: true")
    result = ExportResult(status_url=status_url, manifest=manifest, polls=polls, waited=waited)
    for item in manifest["output"]:
        found = download(client, item["url"], token)
        if len(found) != item["count"]:
            raise BulkExportError(
                f"{item['url']}: {len(found)} lines, manifest says {item['count']}"
            )
        result.resources.setdefault(item["type"], []).extend(found)
    for item in manifest["error"]:
        result.errors.extend(download(client, item["url"], token))
    if attachments:
        result.attachments_checked = check_attachments(
            client, result.resources.get("DocumentReference", []), token
        )
    return result


def main(argv: list[str]) -> int:
    base, token = argv[1].rstrip("/"), argv[2]
    with httpx.Client(timeout=60) as client:
        result = run(client, base, token)
    counts = {kind: len(items) for kind, items in result.resources.items()}
    print(json.dumps({"files": counts, "errors": len(result.errors), "polls": result.polls}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
