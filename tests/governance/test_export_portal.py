"""A patient asks for their data in the portal, follows it, and downloads it once
(SQLite + filesystem and PostgreSQL + S3)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from medvault.audit.sealer import seal_pending
from medvault.auth.principal import Role
from medvault.governance.export_verifier import verify
from medvault.runtime import Runtime
from tests.support.factories import create_patient, text_pdf_bytes, upload_raw
from tests.support.jobs import run_due_jobs
from tests.support.portal import csrf_token, portal_login
from tests.support.users import UserFactory

PASSPHRASE = "lantern orchard velvet ninety"


def test_a_patient_asks_follows_and_downloads_once(
    client: TestClient, app: FastAPI, runtime: Runtime, make_user: UserFactory, tmp_path: Path
) -> None:
    patient = create_patient(client)
    assert upload_raw(client, patient, text_pdf_bytes("Portal export")).status_code == 201
    user = make_user(Role.PATIENT, patient_id=patient)
    with TestClient(app) as browser:
        assert portal_login(browser, user.username, user.password).is_redirect
        page = browser.get("/my-data")
        assert page.status_code == 200 and "You have not asked for a copy yet." in page.text
        assert 'href="/my-data" aria-current="page"' in page.text
        token = csrf_token(browser, "/my-data")
        # Two different passphrases, then a short one: refused, nothing queued.
        differ = browser.post(
            "/my-data/exports",
            data={"csrf_token": token, "passphrase": PASSPHRASE, "passphrase_again": "x" * 20},
        )
        assert differ.status_code == 422 and "The two passphrases differ." in differ.text
        short = browser.post(
            "/my-data/exports",
            data={"csrf_token": token, "passphrase": "short", "passphrase_again": "short"},
        )
        assert short.status_code == 422 and "at least 12 characters" in short.text
        asked = browser.post(
            "/my-data/exports",
            data={"csrf_token": token, "passphrase": PASSPHRASE, "passphrase_again": PASSPHRASE},
            follow_redirects=False,
        )
        assert asked.status_code == 303 and asked.headers["location"] == "/my-data?requested=1"
        waiting = browser.get("/my-data?requested=1")
        assert 'data-export-state="queued"' in waiting.text
        seal_pending(runtime=runtime)
        run_due_jobs(runtime)
        ready = browser.get("/my-data")
        assert 'data-export-state="ready"' in ready.text
        # The one-time link never sits in the page.
        assert "/api/v1/exports/download/" not in ready.text
        export_id = ready.text.split('data-export-id="', 1)[1].split('"', 1)[0]
        handed = browser.post(
            f"/my-data/exports/{export_id}/download",
            data={"csrf_token": csrf_token(browser, "/my-data")},
            follow_redirects=False,
        )
        assert handed.status_code == 303
        link = handed.headers["location"].split("://", 1)[1].split("/", 1)[1]
        archive = browser.get(f"/{link}")
        assert archive.status_code == 200 and archive.headers["content-type"] == "application/zip"
        after = browser.get("/my-data")
        assert 'data-export-state="downloaded"' in after.text
        again = browser.post(
            f"/my-data/exports/{export_id}/download",
            data={"csrf_token": csrf_token(browser, "/my-data")},
        )
        assert again.status_code == 409
    path = tmp_path / "mine.zip"
    path.write_bytes(archive.content)
    assert verify(path, PASSPHRASE).ok


def test_staff_have_no_your_data_page(
    client: TestClient, app: FastAPI, make_user: UserFactory
) -> None:
    clinician = make_user(Role.CLINICIAN)
    with TestClient(app) as browser:
        assert portal_login(browser, clinician.username, clinician.password).is_redirect
        assert browser.get("/my-data").status_code == 403
        assert 'href="/my-data"' not in browser.get("/documents").text
