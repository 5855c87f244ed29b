"""Portal pages over HTTP on both backends: scoping, uploads, versions, delete, links, search.

The browser scenarios (tests/web/test_scenarios.py) drive the same pages in Chromium;
these pin down the server's answers exactly, including every refusal.
"""

from __future__ import annotations

import hashlib
import re
import uuid

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.processing.scanning_world import drain
from tests.support.factories import pdf_bytes, png_bytes, upload_raw
from tests.support.inspect import audit_events, stored_state
from tests.support.portal import csrf_token, post_form
from tests.web.portal_world import Practice

pytestmark = pytest.mark.parametrize("backend", ["sqlite-fs", "pg-s3"], indirect=True)

# A document's title link in the table (with the list view it was opened from, if any).
TITLE_LINK = re.compile(r'<a href="/documents/[0-9a-f-]{36}(?:\?from=[\w-]+)?">([^<]+)</a>')


def _upload(browser: TestClient, url: str, content: bytes, **fields: str) -> httpx.Response:
    response: httpx.Response = browser.post(
        url,
        files={"file": (fields.pop("filename", "scan.pdf"), content, "application/pdf")},
        data=fields,
        headers={"X-CSRF-Token": csrf_token(browser), "Accept": "application/json"},
    )
    return response


def test_a_patient_sees_only_their_own_documents(practice: Practice) -> None:
    with practice.browser("patient") as browser:
        page = browser.get("/documents")
        assert "Own lab report" in page.text
        assert "Foreign scan" not in page.text
        # Nothing on the page suggests other patients exist: no patient column, no picker.
        assert "Otherfamily" not in page.text and ">Patient<" not in page.text
        assert browser.get("/patients").status_code == 403
        foreign = browser.get(f"/documents/{practice.foreign_doc}")
        absent = browser.get(f"/documents/{uuid.uuid4()}")
        assert foreign.status_code == absent.status_code == 404
        assert foreign.text == absent.text
        for path in ("download", "view", "delete"):
            assert browser.get(f"/documents/{practice.foreign_doc}/{path}").status_code in (
                403,
                404,
            )
        assert browser.get(f"/documents/{practice.foreign_doc}/download").text == absent.text


def test_a_clinician_sees_their_care_team_and_break_glass_widens_it(practice: Practice) -> None:
    with practice.browser("clinician") as browser:
        page = browser.get("/documents")
        assert "Own lab report" in page.text and "OWNFAMILY, Alicia" in page.text
        assert "Foreign scan" not in page.text
        assert browser.get(f"/patients/{practice.foreign}").status_code == 404
        too_short = post_form(browser, "/emergency", {"reason": "because"})
        assert too_short.status_code == 422 and "10 to 500 characters" in too_short.text
        started = post_form(
            browser, "/emergency", {"reason": "Unconscious patient in the emergency room"}
        )
        assert started.status_code == 200 and "Emergency access is on" in started.text
        foreign = browser.get(f"/documents/{practice.foreign_doc}")
        assert foreign.status_code == 200 and "Foreign scan" in foreign.text
        ended = post_form(browser, "/emergency/end", {})
        assert "Emergency access is on" not in ended.text
        assert browser.get(f"/documents/{practice.foreign_doc}").status_code == 404
    flagged = audit_events(practice.runtime, "document.read")
    assert any(
        e.resource_id == practice.foreign_doc
        and e.break_glass_reason == "Unconscious patient in the emergency room"
        for e in flagged
    )
    assert audit_events(practice.runtime, "access.break_glass.start")


def test_an_admin_sees_metadata_but_not_content(practice: Practice) -> None:
    with practice.browser("admin") as browser:
        page = browser.get(f"/documents/{practice.foreign_doc}")
        assert page.status_code == 200 and "can see this document's details" in page.text
        assert browser.get(f"/documents/{practice.foreign_doc}/download").status_code == 403


def test_an_auditor_reaches_only_the_audit_log(practice: Practice) -> None:
    with practice.browser("auditor") as browser:
        assert browser.get("/", follow_redirects=False).headers["location"] == "/audit"
        assert browser.get("/documents").status_code == 403
        assert browser.get(f"/documents/{practice.own_doc}").status_code == 403
        log = browser.get("/audit")
        assert log.status_code == 200 and "document.create" in log.text
        queued = post_form(browser, "/audit/verify", {}, follow_redirects=False)
        assert queued.status_code == 303
        # The embedded worker is off in tests: run the queued jobs as it would.
        assert drain(practice.runtime) >= 1
        verified = browser.get(queued.headers["location"])
        assert verified.status_code == 200
        assert 'data-verify-result="ok"' in verified.text


def test_uploads_from_the_page_stream_into_the_vault(practice: Practice) -> None:
    with practice.browser("clinician") as browser:
        content = pdf_bytes(300_000)
        stored = _upload(
            browser,
            "/upload/files",
            content,
            patient_id=practice.own,
            document_type="11502-2",
            filename="ferritin.pdf",
        )
        assert stored.status_code == 201, stored.text
        body = stored.json()
        assert body["sha256"] == hashlib.sha256(content).hexdigest()
        assert body["title"] == "ferritin.pdf" and body["url"] == f"/documents/{body['id']}"
        downloaded = browser.get(f"/documents/{body['id']}/download")
        assert downloaded.content == content
        assert "attachment" in downloaded.headers["content-disposition"]

        again = _upload(
            browser,
            "/upload/files",
            content,
            patient_id=practice.own,
            document_type="11502-2",
        )
        assert again.status_code == 409
        assert again.json()["existing_document_id"] == body["id"]

        before = stored_state(practice.runtime)
        refused = browser.post(
            "/upload/files",
            files={"file": ("notes.txt", b"plain text, not a clinical format", "text/plain")},
            data={"patient_id": practice.own, "document_type": "11502-2"},
            headers={"X-CSRF-Token": csrf_token(browser), "Accept": "application/json"},
        )
        assert refused.status_code == 415
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["detail"].endswith(".")  # a sentence, not a code
        assert stored_state(practice.runtime) == before

        foreign = _upload(
            browser,
            "/upload/files",
            pdf_bytes(),
            patient_id=practice.foreign,
            document_type="11502-2",
        )
        assert foreign.status_code == 422
        assert stored_state(practice.runtime) == before

        no_csrf = browser.post(
            "/upload/files",
            files={"file": ("a.pdf", pdf_bytes(), "application/pdf")},
            data={"patient_id": practice.own, "document_type": "11502-2"},
            headers={"Accept": "application/json"},
        )
        assert no_csrf.status_code == 403
        assert stored_state(practice.runtime) == before


def test_a_patient_uploads_only_to_their_own_record(practice: Practice) -> None:
    with practice.browser("patient") as browser:
        stored = _upload(
            browser,
            "/upload/files",
            png_bytes(),
            patient_id=practice.foreign,  # ignored: a patient's uploads go to their record
            document_type="11502-2",
            filename="photo.png",
        )
        assert stored.status_code == 201
        assert stored.json()["patient_id"] == practice.own


def test_versions_history_delete_and_restore(practice: Practice) -> None:
    with practice.browser("clinician") as browser:
        second = pdf_bytes(5000)
        added = _upload(browser, f"/documents/{practice.own_doc}/versions", second)
        assert added.status_code == 201 and added.json()["version"] == 2
        page = browser.get(f"/documents/{practice.own_doc}")
        assert "Version history" in page.text
        assert page.text.count("?version=") == 2
        first = browser.get(f"/documents/{practice.own_doc}/download?version=1")
        assert first.status_code == 200 and first.content != second
        assert browser.get(f"/documents/{practice.own_doc}/download").content == second

        no_reason = post_form(browser, f"/documents/{practice.own_doc}/delete", {"reason": ""})
        assert no_reason.status_code == 422
        deleted = post_form(
            browser, f"/documents/{practice.own_doc}/delete", {"reason": "filed twice"}
        )
        assert deleted.status_code == 200 and "was deleted" in deleted.text
        assert "Own lab report" not in browser.get("/documents").text
        assert browser.get(f"/documents/{practice.own_doc}/download").status_code == 410
        restored = post_form(browser, f"/documents/{practice.own_doc}/restore", {})
        assert restored.status_code == 200
        assert "Own lab report" in browser.get("/documents").text
    reasons = [e.details.get("reason") for e in audit_events(practice.runtime, "document.delete")]
    assert reasons == ["filed twice"]


def test_copy_link_issues_a_working_time_limited_link(practice: Practice) -> None:
    with practice.browser("patient") as browser:
        link = browser.post(
            f"/documents/{practice.own_doc}/link",
            data={"minutes": "60", "csrf_token": csrf_token(browser)},
            headers={"Accept": "application/json"},
        )
        assert link.status_code == 201
        url = link.json()["url"]
        assert "/api/v1/download/" in url
    with TestClient(practice.app) as stranger:
        assert stranger.get(url.split("testserver", 1)[1]).status_code == 200


def test_search_sort_and_filters_are_posted_and_scoped(practice: Practice) -> None:
    for title, description in (
        ("Haemoglobin trend", "falling slowly"),
        ("Chest X-ray report", "clear"),
        ("Referral", "to haematology <b>urgent</b>"),
    ):
        upload_raw(
            practice.service, practice.own, pdf_bytes(), title=title, description=description
        )
    upload_raw(practice.service, practice.foreign, pdf_bytes(), title="Haematology foreign")
    with practice.browser("clinician") as browser:
        # Search mode: ranked by relevance (a title match first) whatever the sort says.
        found = post_form(
            browser, "/documents", {"q": "haematology or haemoglobin", "sort": "title"}
        )
        titles = re.findall(TITLE_LINK, found.text)
        assert titles == ["Haemoglobin trend", "Referral"]
        # Snippets are highlighted with <mark>, and the document's own text is escaped.
        assert "to <mark>haematology</mark> &lt;b&gt;urgent&lt;/b&gt;" in found.text
        assert "Haematology foreign" not in found.text
        typed = post_form(browser, "/documents", {"document_type": "18842-5"})
        assert "No documents match these filters" in typed.text
        bad = post_form(
            browser, "/documents", {"uploaded_from": "2026-05-02", "uploaded_to": "2026-05-01"}
        )
        assert bad.status_code == 422 and "after the" in bad.text


def test_paging_forward_and_back(practice: Practice) -> None:
    for number in range(27):
        upload_raw(practice.service, practice.own, pdf_bytes(600), title=f"Note {number:02d}")
    with practice.browser("patient") as browser:
        first = post_form(browser, "/documents", {"sort": "title"})
        cursor = re.search(r'name="cursor" value="([^"]+)"', first.text)
        assert cursor is not None
        second = post_form(
            browser, "/documents", {"sort": "title", "cursor": cursor.group(1), "trail": ""}
        )
        titles = re.findall(TITLE_LINK, second.text)
        # 28 documents (with the lab report), 25 per page, sorted by title.
        assert titles == ["Note 25", "Note 26", "Own lab report"]
        assert "Previous page" in second.text and "Next page" not in second.text


def test_no_patient_data_in_any_url(practice: Practice) -> None:
    """Names, identifiers and search words never appear in links, forms or redirects."""
    secret_words = ("Ownfamily", "Alicia", "Own lab report", "haem", "trend")
    with practice.browser("clinician") as browser:
        pages = [
            browser.get("/documents"),
            browser.get(f"/documents/{practice.own_doc}"),
            browser.get("/patients"),
            browser.get(f"/patients/{practice.own}"),
            browser.get("/upload"),
            browser.get("/compose"),
            post_form(browser, "/documents", {"q": "haem"}),
            post_form(browser, "/documents", {"q": "haemoglobin trend"}),
            post_form(browser, "/patients", {"text": "Ownfamily"}),
        ]
        for page in pages:
            assert page.status_code == 200
            assert not any(word.lower() in str(page.url).lower() for word in secret_words)
            for url in re.findall(r'(?:href|src|action)="([^"]*)"', page.text):
                lowered = url.lower()
                assert not any(word.lower() in lowered for word in secret_words), url
                identifier = practice.service.get(f"/api/v1/patients/{practice.own}").json()
                assert identifier["identifier"]["value"] not in url


def test_user_text_is_escaped_everywhere(practice: Practice) -> None:
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    doc = upload_raw(
        practice.service, practice.own, pdf_bytes(), title=hostile, description=hostile
    ).json()["id"]
    with practice.browser("clinician") as browser:
        for page in (browser.get("/documents"), browser.get(f"/documents/{doc}")):
            assert "<script>alert" not in page.text and "<img src=x" not in page.text
            assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page.text
