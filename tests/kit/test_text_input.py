"""Issue 9, defect 7: control characters in any text input are a 422, and no value
a client sent reaches the log, even when the database refuses a statement.

On PostgreSQL a NUL byte once reached the driver, which failed with a 500 whose log
line held the row's other values (names, birth dates, titles).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError

from medvault.kit.text import has_forbidden_characters
from medvault.patients.models import Patient
from medvault.runtime import Runtime
from tests.fhir.support import document_reference, post_resource
from tests.support.factories import (
    create_patient,
    patient_payload,
    pdf_bytes,
    upload_multipart,
    upload_raw,
)
from tests.support.inspect import stored_state

# A value no log line may ever show: its first part is what a leak would print.
SECRET = "Zebulon-Quartermaine-4711"
NUL = SECRET + "\x00tail"


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Everything at DEBUG, SQLAlchemy's statement and parameter logging included."""
    caplog.set_level(logging.DEBUG)
    for name in ("sqlalchemy.engine", "sqlalchemy.pool", "medvault", "uvicorn", "httpx"):
        caplog.set_level(logging.DEBUG, logger=name)
    yield caplog
    assert SECRET not in caplog.text


def _refused(response: httpx.Response) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert SECRET not in str(body)


def _patients(runtime: Runtime) -> int:
    with runtime.patients.session() as session:
        return session.scalar(select(func.count()).select_from(Patient)) or 0


@pytest.mark.parametrize(
    "char", ["\x00", "\x01", "\x1b", "\x7f", "\x85", "\u009b", "\ud800"], ids=repr
)
def test_the_rule_refuses_controls_and_surrogates(char: str) -> None:
    assert has_forbidden_characters(f"a{char}b")


@pytest.mark.parametrize("char", ["\t", "\n", "\r", "é", "\u200b", " "], ids=repr)
def test_the_rule_keeps_tabs_line_breaks_and_letters(char: str) -> None:
    assert not has_forbidden_characters(f"a{char}b")


def test_nul_in_an_upload_title_or_description_stores_nothing(
    client: TestClient, runtime: Runtime, logs: pytest.LogCaptureFixture
) -> None:
    patient = create_patient(client)
    _refused(upload_multipart(client, patient, pdf_bytes(), title=NUL))
    _refused(upload_multipart(client, patient, pdf_bytes(), description=NUL))
    _refused(upload_raw(client, patient, pdf_bytes(), title=NUL))
    _refused(upload_raw(client, patient, pdf_bytes(), description=NUL))
    _refused(upload_raw(client, patient, pdf_bytes(), filename=NUL + ".pdf"))
    # httpx would percent-encode the NUL in a part's filename; a hostile client does not.
    boundary, cd = "hostile-boundary", "Content-Disposition: form-data; name="
    body = (
        (
            f'--{boundary}\r\n{cd}"patient_id"\r\n\r\n{patient}\r\n'
            f'--{boundary}\r\n{cd}"document_type"\r\n\r\n11502-2\r\n'
            f'--{boundary}\r\n{cd}"file"; filename="{NUL}.pdf"\r\n'
            "Content-Type: application/pdf\r\n\r\n"
        ).encode()
        + pdf_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    _refused(
        client.post(
            "/api/v1/documents",
            content=body,
            headers={"content-type": f"multipart/form-data; boundary={boundary}"},
        )
    )
    state = stored_state(runtime)
    assert (state.documents, state.versions, state.blobs) == (0, 0, 0)


def test_nul_in_a_patient_name_or_identifier_stores_nothing(
    client: TestClient, runtime: Runtime, logs: pytest.LogCaptureFixture
) -> None:
    before = _patients(runtime)
    _refused(client.post("/api/v1/patients", json=patient_payload(family_name=NUL)))
    _refused(client.post("/api/v1/patients", json=patient_payload(given_name=NUL)))
    payload = patient_payload()
    payload["identifier"]["value"] = NUL
    _refused(client.post("/api/v1/patients", json=payload))
    assert _patients(runtime) == before


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/api/v1/documents", "q"),
        ("/api/v1/patients", "name"),
        ("/api/v1/audit/events", "actor"),
        ("/fhir/Patient", "name"),
        ("/fhir/DocumentReference", "description"),
    ],
)
def test_nul_in_a_search_parameter_is_422(
    client: TestClient, path: str, param: str, logs: pytest.LogCaptureFixture
) -> None:
    response = client.get(path, params={param: NUL})
    assert response.status_code == 422, response.text
    assert SECRET not in response.text


def test_nul_in_a_fhir_resource_or_search_form_is_refused(
    client: TestClient, runtime: Runtime, logs: pytest.LogCaptureFixture
) -> None:
    patient = create_patient(client)
    resource = document_reference(patient, pdf_bytes(), description=NUL)
    response = post_resource(client, "/fhir/DocumentReference", resource)
    assert response.status_code == 422, response.text
    assert SECRET not in response.text
    assert stored_state(runtime).documents == 0
    searched = client.post(
        "/fhir/Patient/_search",
        content=f"name={SECRET}%00".encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert searched.status_code == 422, searched.text


def test_nul_in_a_portal_form_is_422(
    anon_client: TestClient, logs: pytest.LogCaptureFixture
) -> None:
    response = anon_client.post(
        "/login",
        content=f"username={SECRET}%00&password=x".encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 422
    assert SECRET not in response.text


def test_nul_in_an_api_login_is_422(
    anon_client: TestClient, logs: pytest.LogCaptureFixture
) -> None:
    response = anon_client.post(
        "/api/v1/auth/token",
        data={"username": NUL, "password": "x", "grant_type": "password"},
    )
    assert response.status_code == 422, response.text
    assert SECRET not in response.text


def test_engines_hide_bound_parameters(runtime: Runtime, logs: pytest.LogCaptureFixture) -> None:
    """A failing statement's error (and so any log line quoting it) omits the values."""
    for database in (runtime.clinical, runtime.auth):
        assert database.engine.hide_parameters
        with database.session() as session, pytest.raises(SQLAlchemyError) as caught:
            session.execute(text("INSERT INTO no_such_table VALUES (:v)"), {"v": SECRET})
        assert SECRET not in str(caught.value)
        logging.getLogger("medvault.test").error("statement failed: %s", caught.value)


# -- bounded searches (defect 7 and 8: SQLite's expression tree overflowed) ---------------


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/fhir/Patient", {"_id": ",".join(str(i) for i in range(1700))}),
        ("/fhir/DocumentReference", {"date": ",".join(["ge2020-01-01"] * 4000)}),
        ("/fhir/Patient", {"name": " ".join(["ann"] * 3000)}),
        ("/fhir/Patient", {"name": " ".join(["ann"] * 21)}),
        ("/fhir/DocumentReference", {"_id": ",".join(["x"] * 101)}),
        ("/api/v1/patients", {"name": " ".join(["a"] * 21)}),
    ],
    ids=["fhir-id-1700", "fhir-date-4000", "fhir-name-3000-words", "fhir-name-21-words",
         "fhir-id-101", "rest-name-21-words"],
)  # fmt: skip
def test_oversized_searches_are_refused_with_4xx(
    client: TestClient, path: str, params: dict[str, str]
) -> None:
    response = client.get(path, params=params)
    assert response.status_code == 400, response.text[:500]
    assert "search-too-complex" in response.text


def test_repeated_parameters_count_towards_the_bound(client: TestClient) -> None:
    params = [("_id", "00000000-0000-4000-8000-000000000000")] * 101
    assert client.get("/fhir/Patient", params=params).status_code == 400
    assert client.get("/fhir/Patient", params=params[:100]).status_code == 200


def test_searches_within_the_bounds_still_work(client: TestClient) -> None:
    create_patient(client)
    assert client.get("/fhir/Patient", params={"name": " ".join(["a"] * 20)}).status_code == 200
    ids = ",".join(f"{i:08x}-0000-4000-8000-000000000000" for i in range(100))
    assert client.get("/fhir/Patient", params={"_id": ids}).status_code == 200
