"""The portal shows how long a record is kept, and a destroyed record's tombstone
(SQLite + filesystem and PostgreSQL + S3)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from medvault.auth.principal import Role
from medvault.runtime import Runtime
from tests.governance.support import MARKER, listed_appraisal, upload_due_record
from tests.support.jobs import run_due_jobs
from tests.support.portal import portal_login
from tests.support.users import UserFactory


def test_the_document_page_says_until_when_and_then_that_it_was_destroyed(
    client: TestClient, app: FastAPI, runtime: Runtime, make_user: UserFactory
) -> None:
    record = upload_due_record(client, runtime)
    patient_user = make_user(Role.PATIENT, patient_id=record.patient_id)
    admin = make_user(Role.ADMIN)
    with TestClient(app) as browser:
        assert portal_login(browser, patient_user.username, patient_user.password).is_redirect
        page = browser.get(f"/documents/{record.document_id}")
        assert page.status_code == 200
        # The patient reads their record's retention date (treatment ended 2012 + 8).
        assert 'data-retain-until="2020-03-01"' in page.text
        assert "1 Mar 2020, then reviewed before it is destroyed" in page.text
        # In Welsh too.
        welsh = browser.get(f"/documents/{record.document_id}", headers={"Accept-Language": "cy"})
        assert "1 Maw 2020" in welsh.text and "then reviewed" not in welsh.text

    entry = listed_appraisal(client, runtime, record.document_id)
    client.post(f"/api/v1/governance/appraisals/{entry['id']}/approve", json={"reason": "due"})
    run_due_jobs(runtime)
    with TestClient(app) as browser:
        assert portal_login(browser, admin.username, admin.password).is_redirect
        page = browser.get(f"/documents/{record.document_id}")
        assert page.status_code == 200
        assert ">Destroyed</span>" in page.text
        assert "Destroyed at the end of its retention period" in page.text
        assert f"/documents/{record.document_id}/restore" not in page.text
        assert MARKER not in page.text
