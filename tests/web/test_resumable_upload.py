"""Resumable uploads from the portal, in Chromium: tus-js-client against /upload/resumable.

Files from ``RESUMABLE_FROM_BYTES`` go resumable in PATCHes of ``CHUNK_BYTES``; here both
are small (a 300 KB file, 64 KiB PATCHes) and Chromium's network emulation throttles
uploads to 160 KB/s, so a file takes about two seconds and five PATCHes: long enough to
cut the connection, pause, reload, cancel or log out in the middle, every time.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import CDPSession, Page, Request, expect
from sqlalchemy import func, select

from medvault.auth.principal import Role
from medvault.documents.models import Document, DocumentVersion
from medvault.runtime import Runtime
from medvault.uploads.models import Upload
from medvault.uploads.staging import UPLOAD_BLOB_PREFIX
from medvault.web.pages import resumable
from tests.support.browser import PageFactory, check_accessibility, console_errors
from tests.support.factories import create_patient, pdf_bytes, put_on_care_team, upload_raw
from tests.support.users import UserFactory
from tests.web.test_scenarios import ui_login

FILE_BYTES = 300_000
CHUNK = 64 * 1024
UPLOAD_BYTES_PER_SECOND = 160_000
# What Chromium logs, as console errors, for requests these scenarios expect to fail:
# one network emulation cut off, and one that met the lease of a request just aborted
# (423, which tus-js-client retries).
EXPECTED_FAILURES = ("net::ERR_INTERNET_DISCONNECTED", "status of 423 (Locked)")


def unexpected_errors(page: Page) -> list[str]:
    return [
        error
        for error in console_errors(page)
        if not any(expected in error for expected in EXPECTED_FAILURES)
    ]


@pytest.fixture(autouse=True)
def _small_resumable_uploads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resumable, "RESUMABLE_FROM_BYTES", 100_000)
    monkeypatch.setattr(resumable, "CHUNK_BYTES", CHUNK)


@dataclass
class TusTraffic:
    """The page's requests to /upload/resumable, in order: (method, Upload-Offset)."""

    sent: list[tuple[str, str | None]] = field(default_factory=list)

    def record(self, request: Request) -> None:
        if "/upload/resumable" in request.url:
            self.sent.append((request.method, request.headers.get("upload-offset")))

    def count(self, method: str) -> int:
        return sum(1 for sent, _ in self.sent if sent == method)


@dataclass
class Scene:
    page: Page
    network: CDPSession
    traffic: TusTraffic
    runtime: Runtime
    patient: str
    path: Path
    data: bytes

    def throttle(self, *, offline: bool = False, upload: int = UPLOAD_BYTES_PER_SECOND) -> None:
        """Chromium's own network emulation: slow uploads (-1: full speed), or no network."""
        self.network.send(
            "Network.emulateNetworkConditions",
            {
                "offline": offline,
                "latency": 0,
                "downloadThroughput": -1,
                "uploadThroughput": upload,
            },
        )

    def upload_row(self) -> Upload | None:
        with self.runtime.clinical.read_session() as session:
            rows = list(session.scalars(select(Upload)))
        assert len(rows) <= 1, rows
        return rows[0] if rows else None

    def wait_for_server_offset(self, at_least: int) -> int:
        """Until the server has recorded ``at_least`` bytes (and not all of them)."""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            row = self.upload_row()
            if row is not None and row.offset >= at_least:
                assert row.offset < len(self.data), "the upload finished before the cut"
                return row.offset
            self.page.wait_for_timeout(25)
        raise AssertionError(f"the server never reached {at_least} bytes")

    def settled_offset(self) -> int:
        """Where the upload stands once no request holds it (an aborted one has recorded
        what it received): what the page's HEAD will be told."""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            row = self.upload_row()
            assert row is not None
            if row.lock_token is None:
                return row.offset
            self.page.wait_for_timeout(25)
        raise AssertionError("a request still holds the upload")

    def stored_sha256(self) -> str:
        """The SHA-256 the vault computed over the stored document's bytes."""
        with self.runtime.clinical.read_session() as session:
            digest = session.scalar(
                select(DocumentVersion.sha256)
                .join(Document, Document.id == DocumentVersion.document_id)
                .where(Document.title == self.path.stem)
            )
        assert digest is not None, "no document was stored"
        return digest

    def staged_blobs(self) -> list[str]:
        return [blob.key for blob in self.runtime.blobs.list_blobs(UPLOAD_BLOB_PREFIX)]


@pytest.fixture
def scene(
    page: PageFactory, runtime: Runtime, client: TestClient, make_user: UserFactory, tmp_path: Path
) -> Iterator[Scene]:
    """A clinician on the upload page, for their patient, with a 300 KB file to send."""
    patient = create_patient(client)
    clinician = make_user(Role.CLINICIAN)
    put_on_care_team(runtime, clinician_id=clinician.id, patient_id=patient)
    desktop = page()
    ui_login(desktop, clinician.username, clinician.password)
    desktop.goto(f"/upload?patient={patient}")
    traffic = TusTraffic()
    desktop.on("request", traffic.record)
    network = desktop.context.new_cdp_session(desktop)
    network.send("Network.enable")
    data = pdf_bytes(FILE_BYTES)
    path = tmp_path / f"scan-{uuid.uuid4().hex[:8]}.pdf"
    path.write_bytes(data)
    found = Scene(desktop, network, traffic, runtime, patient, path, data)
    found.throttle()
    yield found


def _start(scene: Scene) -> None:
    scene.page.locator("#files").set_input_files(scene.path)
    scene.page.get_by_role("button", name="Upload 1 file").click()


def _done(scene: Scene) -> None:
    item = scene.page.locator(".upload-item", has_text=scene.path.name)
    expect(item).to_have_class("upload-item done", timeout=20_000)
    expect(item.get_by_role("link", name=f"Open {scene.path.stem}")).to_be_visible()
    assert scene.stored_sha256() == hashlib.sha256(scene.data).hexdigest()
    row = scene.upload_row()
    assert row is not None and row.status == "complete"
    assert scene.staged_blobs() == []  # the chunks went once the document was stored


def test_the_upload_survives_a_lost_connection(scene: Scene) -> None:
    _start(scene)
    item = scene.page.locator(".upload-item", has_text=scene.path.name)
    expect(
        item.get_by_role("progressbar", name=f"Upload progress of {scene.path.name}")
    ).to_be_visible()
    scene.wait_for_server_offset(2 * CHUNK)

    # Offline, Chromium fails the page's next request at once (ERR_INTERNET_DISCONNECTED)
    # and navigator.onLine turns false: the page waits for the "online" event.
    scene.throttle(offline=True)
    expect(item.get_by_role("status")).to_have_text(
        "The connection was lost. The upload goes on by itself when you are back online."
    )
    expect(item.get_by_role("button", name=f"Resume upload of {scene.path.name}")).to_be_visible()
    cut_at = scene.settled_offset()
    sent_before = len(scene.traffic.sent)

    scene.throttle()  # back online: the page goes on by itself
    _done(scene)
    after = scene.traffic.sent[sent_before:]
    # It asked where the upload stood, then sent only the rest: one upload, never restarted.
    assert after[0] == ("HEAD", None), after
    assert after[1] == ("PATCH", str(cut_at)), after
    assert scene.traffic.count("POST") == 1
    assert unexpected_errors(scene.page) == []


def test_pause_and_resume(scene: Scene) -> None:
    _start(scene)
    item = scene.page.locator(".upload-item", has_text=scene.path.name)
    scene.wait_for_server_offset(CHUNK)
    item.get_by_role("button", name=f"Pause upload of {scene.path.name}").click()
    expect(item.get_by_role("status")).to_have_text("Paused. Press Resume to go on from here.")
    resume = item.get_by_role("button", name=f"Resume upload of {scene.path.name}")
    # Pause and Resume take each other's place, and the keyboard follows.
    expect(resume).to_be_focused()
    check_accessibility(scene.page)
    # Paused means paused: nothing more is sent.
    sent = len(scene.traffic.sent)
    scene.page.wait_for_timeout(500)
    assert len(scene.traffic.sent) == sent
    resume.click()
    _done(scene)
    assert scene.traffic.count("POST") == 1
    assert unexpected_errors(scene.page) == []


def test_cancel_deletes_what_was_sent(scene: Scene) -> None:
    _start(scene)
    item = scene.page.locator(".upload-item", has_text=scene.path.name)
    scene.wait_for_server_offset(CHUNK)
    assert scene.staged_blobs() != []
    item.get_by_role("button", name=f"Cancel upload of {scene.path.name}").click()
    expect(item.get_by_role("status")).to_have_text("Cancelled. Nothing was stored.")
    expect(item).to_have_class("upload-item cancelled")
    # tus termination (a DELETE that meets the aborted PATCH's lease gets 423 and is
    # retried): the upload's row and its staged chunks are gone, and no document came.
    assert scene.traffic.count("DELETE") >= 1
    assert scene.upload_row() is None
    assert scene.staged_blobs() == []
    with scene.runtime.clinical.read_session() as session:
        titles = session.scalar(
            select(func.count()).select_from(Document).where(Document.title == scene.path.stem)
        )
    assert titles == 0
    assert unexpected_errors(scene.page) == []


def test_a_reload_does_not_lose_the_upload(scene: Scene, tmp_path: Path) -> None:
    _start(scene)
    scene.wait_for_server_offset(CHUNK)
    scene.page.reload()
    offset = scene.settled_offset()
    name = scene.path.name
    unfinished = scene.page.get_by_role("list", name="Unfinished uploads")
    item = unfinished.locator(".upload-item", has_text=name)
    expect(item.get_by_role("status")).to_have_text("This upload stopped before it was finished.")
    expect(item.get_by_role("progressbar", name=f"Upload progress of {name}")).to_have_attribute(
        "value", str(offset)
    )
    check_accessibility(scene.page)
    # The file's name (often a patient's) is in this tab only, not in lasting storage.
    lasting = scene.page.evaluate("JSON.stringify(Object.entries(localStorage))")
    assert "medvault-upload::" in lasting
    assert scene.path.stem not in lasting

    # Another file is not taken for it.
    other = tmp_path / "other.pdf"
    other.write_bytes(pdf_bytes(FILE_BYTES))
    item.get_by_label(f"Choose {name} again").set_input_files(other)
    expect(item.get_by_role("status")).to_contain_text("That is not the file this upload started")

    sent_before = len(scene.traffic.sent)
    item.get_by_label(f"Choose {name} again").set_input_files(scene.path)
    _done(scene)
    after = scene.traffic.sent[sent_before:]
    assert after[0] == ("HEAD", None), after
    assert after[1] == ("PATCH", str(offset)), after
    assert scene.traffic.count("POST") == 1
    # Finished: nothing is offered again on the next visit.
    scene.page.reload()
    expect(scene.page.get_by_role("heading", name="Upload documents")).to_be_visible()
    scene.page.wait_for_load_state("networkidle")
    expect(scene.page.locator("[data-unfinished]")).to_be_hidden()


def test_a_large_new_version_goes_resumable(scene: Scene, client: TestClient) -> None:
    first = upload_raw(client, scene.patient, pdf_bytes(2000), title=scene.path.stem)
    document_id = first.json()["id"]
    scene.page.goto(f"/documents/{document_id}")
    scene.throttle(upload=-1)
    # The page reloads once the version is stored, as for a small file.
    with scene.page.expect_navigation(timeout=20_000):
        scene.page.get_by_label("Choose the new file").set_input_files(scene.path)
    expect(scene.page.locator("table.versions tbody tr")).to_have_count(2)
    assert scene.traffic.count("POST") == 1 and scene.traffic.count("PATCH") >= 4
    with scene.runtime.clinical.read_session() as session:
        newest = session.scalar(
            select(DocumentVersion.sha256).where(
                DocumentVersion.document_id == uuid.UUID(document_id),
                DocumentVersion.version == 2,
            )
        )
    assert newest == hashlib.sha256(scene.data).hexdigest()
    assert unexpected_errors(scene.page) == []


def test_logging_out_forgets_the_unfinished_uploads(scene: Scene) -> None:
    """This browser keeps an unfinished upload's address (and, in the tab, its file name)
    for a reload; the next person to log in here must not find them."""
    stored = (
        "[localStorage, sessionStorage].flatMap((kept) =>"
        " Object.keys(kept).filter((key) => key.startsWith('medvault-upload::')))"
    )
    _start(scene)
    scene.wait_for_server_offset(CHUNK)
    assert len(scene.page.evaluate(stored)) == 2  # the address, and the name in the tab
    scene.page.get_by_role("button", name="Log out").click()
    expect(scene.page.get_by_label("Username")).to_be_visible()
    assert scene.page.evaluate(stored) == []
