"""The portal's "Who viewed my documents": a patient's own access history, nobody else's."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.web.portal_world import Practice

pytestmark = pytest.mark.parametrize("backend", ["sqlite-fs", "pg-s3"], indirect=True)
PAGE = "/audit/access-history"


def test_a_patient_sees_who_opened_their_documents_and_nothing_else(
    practice: Practice, client: TestClient
) -> None:
    with practice.browser("clinician") as clinician:
        assert clinician.get(f"/documents/{practice.own_doc}/download").status_code == 200
        assert 'href="/audit/access-history"' not in clinician.get("/documents").text
        assert clinician.get(PAGE).status_code == 403
    # Someone opens the other patient's document: it must not show on this page.
    assert client.get(f"/api/v1/documents/{practice.foreign_doc}/content").status_code == 200
    with practice.browser("patient") as patient:
        assert 'href="/audit/access-history"' in patient.get("/documents").text
        page = patient.get(PAGE)
    assert page.status_code == 200
    assert "content-security-policy" in page.headers
    text = page.text
    assert "Who viewed my documents" in text
    assert "A clinician" in text and "opened a document" in text
    assert f'href="/documents/{practice.own_doc}"' in text  # by its title, a link
    for absent in (
        practice.foreign_doc,
        practice.foreign,
        "Foreign scan",
        practice.users["clinician"].username,
        str(practice.users["clinician"].id),
        "testclient",  # the client address the audit log holds
    ):
        assert absent not in text, absent


def test_only_patients_have_the_page(practice: Practice) -> None:
    for role in ("admin", "auditor"):
        with practice.browser(role) as browser:
            assert browser.get(PAGE).status_code == 403
            assert 'href="/audit/access-history"' not in browser.get("/").text
