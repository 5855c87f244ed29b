"""Create Document over HTTP: preview, the previewed PDF, confirm stores exactly those bytes."""

from __future__ import annotations

import hashlib
import html
import re

import pytest

from tests.support.inspect import stored_state
from tests.support.portal import post_form
from tests.web.portal_world import Practice

pytestmark = pytest.mark.parametrize("backend", ["sqlite-fs", "pg-s3"], indirect=True)


def _draft(practice: Practice) -> dict[str, str]:
    return {
        "patient_id": practice.own,
        "document_type": "11488-4",
        "title": "Cardiology follow-up",
        "diagnosis": "Stable angina",
        "allergies-0-substance": "Penicillin",
        "allergies-0-reaction": "Rash",
        "allergies-0-severity": "moderate",
        "medications-0-name": "Bisoprolol",
        "medications-0-dose": "2.5 mg",
        "medications-0-route": "oral",
        "medications-0-frequency": "once daily",
        "observations-0-name": "Heart rate",
        "observations-0-value": "62",
        "observations-0-unit": "bpm",
        "notes": "Review in three months. <b>not markup</b> & so on",
    }


def _hidden_fields(page: str, form_id: str) -> dict[str, str]:
    form = re.search(rf'<form[^>]*id="{form_id}".*?</form>', page, re.S)
    assert form, form_id
    fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form.group(0))
    return {name: html.unescape(value) for name, value in fields}


def test_preview_then_confirm_stores_exactly_the_previewed_pdf(practice: Practice) -> None:
    with practice.browser("clinician") as browser:
        before = stored_state(practice.runtime)
        preview = post_form(browser, "/compose/preview", _draft(practice))
        assert preview.status_code == 200, preview.text
        assert "Nothing has been stored yet" in preview.text
        assert stored_state(practice.runtime) == before

        shown = _hidden_fields(preview.text, "preview-form")
        pdf = browser.post("/compose/pdf", data=shown)
        assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF-")
        assert pdf.headers["x-frame-options"] == "SAMEORIGIN"
        sha = hashlib.sha256(pdf.content).hexdigest()
        assert shown["preview_sha256"] == sha and sha[:16] in preview.text

        confirm = browser.post(
            "/compose/confirm", data=_hidden_fields(preview.text, "confirm-form")
        )
        assert confirm.status_code == 200
        document_id = re.search(r"/documents/([0-9a-f-]{36})", str(confirm.url))
        assert document_id
        stored = practice.service.get(f"/api/v1/documents/{document_id.group(1)}").json()
        assert stored["sha256"] == sha and stored["title"] == "Cardiology follow-up"
        assert stored["document_type"] == "11488-4" and stored["content_type"] == "application/pdf"
        api_bytes = practice.service.get(f"/api/v1/documents/{stored['id']}/content").content
        assert api_bytes == pdf.content

        # Confirming twice (a double click) stores nothing new and opens the same document.
        again = browser.post("/compose/confirm", data=_hidden_fields(preview.text, "confirm-form"))
        assert stored["id"] in str(again.url)


def test_edit_returns_to_the_filled_in_form(practice: Practice) -> None:
    with practice.browser("clinician") as browser:
        preview = post_form(browser, "/compose/preview", _draft(practice))
        edit = browser.post("/compose/edit", data=_hidden_fields(preview.text, "confirm-form"))
        assert edit.status_code == 200
        assert 'value="Cardiology follow-up"' in edit.text
        assert 'value="Bisoprolol"' in edit.text
        assert "Review in three months. &lt;b&gt;not markup&lt;/b&gt; &amp; so on" in edit.text


def test_invalid_drafts_show_plain_messages_next_to_fields(practice: Practice) -> None:
    with practice.browser("clinician") as browser:
        draft = _draft(practice) | {"title": "", "medications-0-dose": ""}
        page = post_form(browser, "/compose/preview", draft)
        assert page.status_code == 422
        assert 'id="title-error"' in page.text and 'id="medications-0-dose-error"' in page.text
        assert 'aria-invalid="true" aria-describedby="title-error"' in page.text
        # The rest of what was typed is still there.
        assert 'value="Bisoprolol"' in page.text


def test_a_tampered_confirmation_is_refused_and_stores_nothing(practice: Practice) -> None:
    with practice.browser("clinician") as browser:
        preview = post_form(browser, "/compose/preview", _draft(practice))
        fields = _hidden_fields(preview.text, "confirm-form")
        before = stored_state(practice.runtime)
        changed = browser.post("/compose/confirm", data=fields | {"title": "Something else"})
        assert changed.status_code == 409
        assert "changed after it was previewed" in changed.text
        assert stored_state(practice.runtime) == before


def test_compose_is_for_staff_and_patients_in_scope(practice: Practice) -> None:
    with practice.browser("patient") as patient:
        assert patient.get("/compose").status_code == 403
    with practice.browser("clinician") as browser:
        foreign = post_form(
            browser, "/compose/preview", _draft(practice) | {"patient_id": practice.foreign}
        )
        assert foreign.status_code == 422 and "Choose one of your patients" in foreign.text
