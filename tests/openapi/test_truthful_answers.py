"""Answers that disagreed with the OpenAPI document before schemathesis ran in CI."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/api/v1/documents/00000000-0000-0000-0000-000000000000", "GET, DELETE"),
        ("/api/v1/users", "GET, POST"),
        ("/fhir/DocumentReference/x", "GET, PUT, DELETE"),
        # A literal path is its own resource, not an id of the read route beside it.
        ("/fhir/Patient/_search", "POST"),
    ],
)
def test_405_lists_every_method_of_the_path(client: TestClient, path: str, allowed: str) -> None:
    response = client.request("PATCH", path)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed


@pytest.mark.parametrize(
    ("path", "parameter", "value"),
    [
        ("/api/v1/documents", "created_before", "0.5"),
        ("/api/v1/audit/events", "occurred_after", "1700000000"),
        ("/api/v1/patients", "birth_date", "0"),
    ],
)
def test_a_number_is_not_a_date(client: TestClient, path: str, parameter: str, value: str) -> None:
    # pydantic read these as Unix timestamps; the document says ISO 8601.
    response = client.get(path, params={parameter: value})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


def test_fhir_search_form_refuses_control_characters_in_blank_parameters(
    client: TestClient,
) -> None:
    response = client.post(
        "/fhir/Patient/_search",
        content=b"%C2%84=",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 422
    assert "invalid-characters" in response.text


def test_logout_documents_that_it_needs_no_token(anon_client: TestClient) -> None:
    operation = anon_client.get("/openapi.json").json()["paths"]["/api/v1/auth/logout"]["post"]
    assert {} in operation["security"] and "401" in operation["responses"]
    # A refresh token alone ends its session (an unknown one ends nothing, quietly)…
    assert anon_client.post("/api/v1/auth/logout", json={"refresh_token": "x"}).status_code == 204
    # …and with neither token there is nothing to end.
    assert anon_client.post("/api/v1/auth/logout", json={}).status_code == 401
