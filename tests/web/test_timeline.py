"""A patient's timeline (issue 14, item 8): documents by month, newest first, and within
a month by type, in the reader's words and time zone.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import expect
from sqlalchemy import update

from medvault.documents.models import Document
from medvault.web import presenters, timeline_groups
from medvault.web.pages import timeline as timeline_page
from tests.support.browser import PageFactory, check_accessibility
from tests.support.factories import pdf_bytes, upload_raw
from tests.support.portal import csrf_token
from tests.web.portal_world import Practice
from tests.web.test_scenarios import ui_login


def _file(practice: Practice, title: str, document_type: str, created: datetime) -> str:
    document_id: str = upload_raw(
        practice.service,
        practice.own,
        pdf_bytes(5_000 + len(title)),
        title=title,
        document_type=document_type,
    ).json()["id"]
    with practice.runtime.clinical.session() as session:
        session.execute(
            update(Document).where(Document.id == uuid.UUID(document_id)).values(created_at=created)
        )
        session.commit()
    return document_id


def test_the_timeline_groups_by_month_then_type(page: PageFactory, practice: Practice) -> None:
    _file(practice, "Bloods in March", "11502-2", datetime(2026, 3, 10, 9, tzinfo=UTC))
    _file(practice, "Cholesterol", "11502-2", datetime(2026, 3, 20, 9, tzinfo=UTC))
    _file(practice, "Knee X-ray", "18748-4", datetime(2026, 3, 15, 9, tzinfo=UTC))
    _file(practice, "Clinic letter", "34108-1", datetime(2025, 11, 2, 9, tzinfo=UTC))

    phone = page("phone")
    patient = practice.users["patient"]
    ui_login(phone, patient.username, patient.password)
    phone.get_by_role("link", name="Timeline").click()
    expect(phone.get_by_role("heading", level=1)).to_have_text("My timeline")
    months = phone.locator("ol.timeline > li h2")
    # The practice's own report is from today, so it comes first.
    expect(months.nth(1)).to_contain_text("March 2026 (3 documents)")
    expect(months.nth(2)).to_contain_text("November 2025 (1 document)")
    march = phone.locator("ol.timeline > li").nth(1)
    # Within a month, kinds in alphabetical order of the words the reader sees.
    expect(march.locator("h3")).to_have_text(["Scan or X-ray report", "Test results"])
    results = march.locator("h3", has_text="Test results").locator("+ ul li")
    expect(results).to_have_count(2)
    expect(results.first).to_contain_text("Cholesterol")
    check_accessibility(phone)

    desktop = page()
    clinician = practice.users["clinician"]
    ui_login(desktop, clinician.username, clinician.password)
    desktop.goto(f"/patients/{practice.own}")
    desktop.get_by_role("link", name="See all documents as a timeline").click()
    march = desktop.locator("ol.timeline > li").nth(1)
    expect(march.locator("h3")).to_have_text(["Diagnostic imaging report", "Laboratory report"])
    march.get_by_role("link", name="Knee X-ray").click()
    expect(desktop.get_by_role("heading", name="Knee X-ray")).to_be_visible()
    check_accessibility(desktop)


@dataclass(frozen=True)
class _Doc:
    created_at: datetime
    document_type: str = "11502-2"


def _doc(created: datetime, document_type: str = "11502-2") -> _Doc:
    return _Doc(created, document_type)


def test_a_document_belongs_to_the_month_of_its_local_date() -> None:
    # 23:30 UTC on 30 November is 00:30 on 1 December in Europe/Helsinki.
    late = _doc(datetime(2026, 11, 30, 23, 30, tzinfo=UTC))
    helsinki = timeline_groups.group([late], zone=ZoneInfo("Europe/Helsinki"), type_label=str)
    utc = timeline_groups.group([late], zone=UTC, type_label=str)
    assert [m.label for m in helsinki] == ["December 2026"]
    assert [m.label for m in utc] == ["November 2026"]


def test_months_keep_the_list_order_and_types_sort_by_their_words() -> None:
    docs = [
        _doc(datetime(2026, 5, 3, tzinfo=UTC), "72170-4"),
        _doc(datetime(2026, 5, 2, tzinfo=UTC), "11502-2"),
        _doc(datetime(2026, 4, 1, tzinfo=UTC), "72170-4"),
    ]
    months = timeline_groups.group(
        docs,
        zone=UTC,
        type_label=lambda code: presenters.type_label(code, for_patient=True),
    )
    assert [(m.label, [t.label for t in m.types], m.count) for m in months] == [
        ("May 2026", ["Photo", "Test results"], 2),
        ("April 2026", ["Photo"], 1),
    ]


def test_staff_reach_older_documents_of_this_patient_only(
    practice: Practice, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(timeline_page, "TIMELINE_LIMIT", 1)
    upload_raw(practice.service, practice.own, pdf_bytes(5_000), title="Older letter")
    with practice.browser("clinician") as browser:
        html = browser.get(f"/patients/{practice.own}/timeline").text
        form = re.search(
            r'<form method="post" action="/documents[^"]*"[^>]*>(.*?)</form>', html, re.S
        )
        assert form is not None, "no way to the older documents"
        assert f'name="patient_id" value="{practice.own}"' in form.group(1)
        listed = browser.post(
            "/documents", data={"csrf_token": csrf_token(browser), "patient_id": practice.own}
        )
        assert listed.status_code == 200
        assert "Older letter" in listed.text and "Own lab report" in listed.text
        assert "Foreign scan" not in listed.text
    with practice.browser("patient") as browser:
        html = browser.get("/timeline").text
        assert '<a href="/documents">' in html and 'name="patient_id"' not in html
