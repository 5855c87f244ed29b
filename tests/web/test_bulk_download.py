"""Ticked documents as one ZIP (issue 14, item 8): streamed, every document read through
the same access policy and scan gate as a single download, and audited one by one.
"""

from __future__ import annotations

import hashlib
import io
import uuid
import zipfile
from datetime import UTC
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import expect
from sqlalchemy import select

from medvault.audit.context import AuditContext
from medvault.audit.models import AuditEvent
from medvault.auth.principal import Principal, PrincipalKind, Role
from medvault.documents import archive
from medvault.documents.reading import CONTENT_READ
from medvault.kit.clock import utcnow
from medvault.runtime import Runtime
from tests.support.browser import PageFactory, check_accessibility
from tests.support.factories import pdf_bytes, upload_raw
from tests.support.portal import csrf_token
from tests.web.portal_world import Practice
from tests.web.test_scenarios import ui_login

BOTH = pytest.mark.parametrize("backend", ["sqlite-fs", "pg-s3"], indirect=True)


def _content_reads(runtime: Runtime) -> list[AuditEvent]:
    with runtime.clinical.session() as session:
        return list(
            session.scalars(
                select(AuditEvent)
                .where(AuditEvent.action == CONTENT_READ)
                .order_by(AuditEvent.occurred_at)
            )
        )


def _post_archive(client: TestClient, ids: list[str]) -> bytes | int:
    token = csrf_token(client)
    response = client.post("/documents/archive", data={"csrf_token": token, "document_id": ids})
    if response.status_code != 200:
        return int(response.status_code)
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["cache-control"] == "no-store"
    return bytes(response.content)


def test_ticked_documents_download_as_one_zip(
    page: PageFactory, practice: Practice, tmp_path: Path
) -> None:
    letter = pdf_bytes(300_000)
    second = upload_raw(
        practice.service, practice.own, letter, filename="letter.pdf", title="Clinic letter"
    ).json()["id"]
    desktop = page()
    clinician = practice.users["clinician"]
    ui_login(desktop, clinician.username, clinician.password)
    desktop.goto("/documents")
    bar = desktop.locator("form[data-bulk]")
    download_button = bar.get_by_role("button", name="Download selected as ZIP")
    expect(download_button).to_be_disabled()
    desktop.get_by_label("Select Own lab report").check()
    desktop.get_by_label("Select Clinic letter").check()
    expect(bar.locator("[data-bulk-count]")).to_have_text("2 selected.")
    check_accessibility(desktop)
    before = len(_content_reads(practice.runtime))
    with desktop.expect_download() as download:
        download_button.click()
    path = Path(download.value.path())
    assert download.value.suggested_filename.startswith("documents-")
    # Still on the list: no document id went into a URL.
    assert desktop.url.endswith("/documents")

    with zipfile.ZipFile(path) as zipped:
        assert zipped.testzip() is None
        names = zipped.namelist()
        assert names[-1] == "contents.txt"
        by_title = {name.split(" ", 1)[1].rsplit(".", 1)[0]: name for name in names[:-1]}
        assert set(by_title) == {"Own lab report", "Clinic letter"}
        assert zipped.read(by_title["Clinic letter"]) == letter
        own = practice.service.get(f"/api/v1/documents/{practice.own_doc}/content").content
        assert zipped.read(by_title["Own lab report"]) == own
        contents = zipped.read("contents.txt").decode()
    assert hashlib.sha256(letter).hexdigest() in contents
    assert "Left out" not in contents

    # One audited read per document, both naming the same archive.
    reads = [e for e in _content_reads(practice.runtime)[before:] if "archive" in e.details]
    assert sorted(str(event.resource_id) for event in reads) == sorted([practice.own_doc, second])
    assert len({event.details["archive"] for event in reads}) == 1


@BOTH
def test_what_may_not_be_read_is_left_out_and_audited(practice: Practice) -> None:
    with practice.browser("clinician") as client:
        before = len(_content_reads(practice.runtime))
        body = _post_archive(client, [practice.own_doc, practice.foreign_doc])
    assert isinstance(body, bytes)
    with zipfile.ZipFile(io.BytesIO(body)) as zipped:
        names = zipped.namelist()
        contents = zipped.read("contents.txt").decode()
    assert len(names) == 2 and any("Own lab report" in name for name in names)
    # The other patient's document is named only by the id the caller sent, with the
    # same words as for an id that does not exist.
    assert f"document {practice.foreign_doc}: not found, or you may not open it" in contents
    assert "Foreign scan" not in contents
    reads = _content_reads(practice.runtime)[before:]
    outcomes = {event.resource_id: event.outcome for event in reads}
    assert outcomes[practice.own_doc] == "success"
    with practice.runtime.clinical.session() as session:
        denied = session.scalars(
            select(AuditEvent).where(
                AuditEvent.resource_id == practice.foreign_doc,
                AuditEvent.outcome != "success",
            )
        ).all()
    assert denied, "the refused read of the foreign document is not audited"


def test_the_patient_gets_only_their_own(practice: Practice) -> None:
    with practice.browser("patient") as client:
        body = _post_archive(client, [practice.foreign_doc, practice.own_doc])
    assert isinstance(body, bytes)
    with zipfile.ZipFile(io.BytesIO(body)) as zipped:
        assert [name for name in zipped.namelist() if "Foreign" in name] == []
        assert len(zipped.namelist()) == 2


@pytest.mark.parametrize("role", ["admin", "auditor"])
def test_roles_that_cannot_open_content_cannot_zip_it(practice: Practice, role: str) -> None:
    with practice.browser(role) as client:
        token = csrf_token(client, "/" if role == "auditor" else "/documents")
        refused = client.post(
            "/documents/archive", data={"csrf_token": token, "document_id": [practice.own_doc]}
        )
    assert refused.status_code == 403


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ([], "Tick the documents to download first."),
        (["not-an-id"], "A ticked document is not a document id."),
        ([str(uuid.uuid4()) for _ in range(archive.MAX_DOCUMENTS + 1)], "at most 100"),
    ],
)
def test_bad_selections_get_a_clear_422(practice: Practice, ids: list[str], message: str) -> None:
    with practice.browser("clinician") as client:
        before = len(_content_reads(practice.runtime))
        token = csrf_token(client)
        refused = client.post("/documents/archive", data={"csrf_token": token, "document_id": ids})
    assert refused.status_code == 422
    assert message in refused.text
    assert len(_content_reads(practice.runtime)) == before


def test_the_archive_streams_in_chunks(practice: Practice) -> None:
    """No document is held whole: a 6 MB file leaves in pieces of at most about 1 MiB."""
    big = pdf_bytes(6_000_000)
    big_id = upload_raw(practice.service, practice.own, big, filename="big.pdf").json()["id"]
    clinician = practice.users["clinician"]
    principal = Principal(
        kind=PrincipalKind.USER,
        subject_id=clinician.id,
        name=clinician.username,
        role=Role.CLINICIAN,
    )
    chunks = list(
        archive.stream(
            runtime=practice.runtime,
            principal=principal,
            context=AuditContext.system("test"),
            document_ids=[uuid.UUID(big_id)],
            zone=UTC,
            now=utcnow(),
        )
    )
    assert len(chunks) > 5
    assert max(len(chunk) for chunk in chunks) <= 1024 * 1024 + 4096
    with zipfile.ZipFile(io.BytesIO(b"".join(chunks))) as zipped:
        (name,) = [n for n in zipped.namelist() if n != "contents.txt"]
        assert zipped.read(name) == big
        assert zipped.getinfo(name).date_time[:3] == tuple(
            int(part) for part in name[:10].split("-")
        )
