"""The OpenAPI document is valid and a generated client can use it against a live vault."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from openapi_spec_validator import validate

from tests.support.factories import create_patient, pdf_bytes, upload_multipart
from tests.support.live_server import LiveServer

GENERATOR = Path(sys.executable).with_name("openapi-python-client")


def test_document_is_valid_openapi(anon_client: TestClient) -> None:
    schema = anon_client.get("/openapi.json").json()
    validate(schema)  # raises on any violation of the OpenAPI 3.1 specification
    # The portal's HTML pages are not API operations.
    assert not any(
        path.startswith(("/patients", "/documents", "/login")) for path in schema["paths"]
    )


def test_every_error_answer_is_a_problem_or_operation_outcome(anon_client: TestClient) -> None:
    schema = anon_client.get("/openapi.json").json()
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if not status.startswith(("4", "5")) or (path, status) == ("/readyz", "503"):
                    continue
                content = response["content"]
                expected = "OperationOutcome" if path.startswith("/fhir") else "Problem"
                assert all(
                    media["schema"] == {"$ref": f"#/components/schemas/{expected}"}
                    for media in content.values()
                ), (method, path, status)


# openapi-python-client models binary bodies only as application/octet-stream and JSON
# only as application/json; its documented override maps the vault's real types onto them.
GENERATOR_CONFIG = """content_type_overrides:
  application/pdf: application/octet-stream
  image/jpeg: application/octet-stream
  image/png: application/octet-stream
  image/tiff: application/octet-stream
  application/dicom: application/octet-stream
  application/offset+octet-stream: application/octet-stream
  application/fhir+json: application/json
  application/fhir+ndjson: application/octet-stream
"""


def _generate(schema: dict[str, Any], out: Path) -> str:
    spec = out / "openapi.json"
    spec.write_text(json.dumps(schema))
    config = out / "generator.yaml"
    config.write_text(GENERATOR_CONFIG)
    command = [str(GENERATOR), "generate", "--path", str(spec), "--config", str(config)]
    done = subprocess.run(
        [*command, "--output-path", str(out / "client")],
        env={**os.environ, "PATH": f"{GENERATOR.parent}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # The generator reports what it could not understand as warnings; there must be none.
    assert "Warning" not in done.stdout + done.stderr, done.stdout + done.stderr
    return str(out / "client")


def test_generated_client_reads_documents(
    app: FastAPI, client: TestClient, api_token: str, tmp_path: Path
) -> None:
    patient_id = create_patient(client)
    uploaded = upload_multipart(client, patient_id, pdf_bytes(2048))
    assert uploaded.status_code == 201, uploaded.text
    document_id = uploaded.json()["id"]
    root = _generate(client.get("/openapi.json").json(), tmp_path)
    sys.path.insert(0, root)
    try:
        package = importlib.import_module("medvault_client")
        documents = importlib.import_module("medvault_client.api.documents")
        listing = importlib.import_module(
            f"{documents.__name__}.list_documents_api_v1_documents_get"
        )
        reading = importlib.import_module(
            f"{documents.__name__}.get_document_api_v1_documents_document_id_get"
        )
        with LiveServer(app) as server:
            api = package.AuthenticatedClient(base_url=server.url, token=api_token)
            page = listing.sync(client=api, patient_id=patient_id)
            assert [str(item.id) for item in page.items] == [document_id]
            document = reading.sync(client=api, document_id=document_id)
            assert str(document.id) == document_id and document.content_type == "application/pdf"
            missing = reading.sync_detailed(
                client=api, document_id="00000000-0000-0000-0000-000000000000"
            )
            # The 404 is parsed as the documented Problem, not an undocumented status.
            assert missing.status_code == 404
            assert missing.parsed.additional_properties == {} or missing.parsed.status == 404
    finally:
        sys.path.remove(root)
        for name in [m for m in sys.modules if m.startswith("medvault_client")]:
            del sys.modules[name]
