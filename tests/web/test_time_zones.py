"""Local time (issue 14, item 4): the browser's zone is stored per user at login, every
time is shown in it with UTC as the tooltip, and typed dates are days in that zone.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import expect
from pydantic import ValidationError
from sqlalchemy import select

from medvault.auth.models import User
from medvault.auth.principal import Principal, PrincipalKind, Role
from medvault.config import Settings
from medvault.documents.models import Document
from medvault.kit.time_zones import known_zone
from medvault.web.audit_filters import AuditFilterState
from medvault.web.listing import DocumentQuery
from medvault.web.templating import local_datetime, utc_datetime
from tests.support.browser import PageFactory
from tests.support.portal import portal_login
from tests.web.portal_world import Practice
from tests.web.test_scenarios import ui_login

NEW_YORK = ZoneInfo("America/New_York")


def _stored_zone(practice: Practice, role: str) -> str | None:
    with practice.runtime.auth.session() as session:
        user = session.get(User, practice.users[role].id)
        assert user is not None
        return user.time_zone


def _created_at(practice: Practice, document_id: str) -> datetime:
    with practice.runtime.clinical.session() as session:
        created = session.scalar(
            select(Document.created_at).where(Document.id == uuid.UUID(document_id))
        )
    assert created is not None
    return created


def test_the_browser_zone_is_kept_and_every_time_is_shown_in_it(
    practice: Practice, page: PageFactory
) -> None:
    assert _stored_zone(practice, "patient") is None
    new_york = page(timezone_id="America/New_York")
    patient = practice.users["patient"]
    ui_login(new_york, patient.username, patient.password)
    assert _stored_zone(practice, "patient") == "America/New_York"

    created = _created_at(practice, practice.own_doc)
    shown = new_york.locator("td[data-label='Uploaded'] time").first
    # New York's wall clock, with the same instant in UTC on hover.
    expect(shown).to_have_text(local_datetime(created, NEW_YORK))
    expect(shown).to_have_attribute("title", utc_datetime(created))
    assert local_datetime(created, NEW_YORK) != local_datetime(created, UTC)
    expect(new_york.locator("footer")).to_contain_text(
        "Times are shown in United States (New York) Time"
    )


def test_a_login_without_a_known_zone_keeps_the_stored_one(practice: Practice) -> None:
    patient = practice.users["patient"]
    with TestClient(practice.app) as client:
        assert portal_login(client, patient.username, patient.password, time_zone="Asia/Tokyo")
    assert _stored_zone(practice, "patient") == "Asia/Tokyo"
    # No script (""), a made-up name, a path and the host's own zone file change nothing.
    for sent in ("", "Mars/Olympus_Mons", "../../etc/passwd", "localtime", "x" * 500):
        with TestClient(practice.app) as client:
            login = portal_login(client, patient.username, patient.password, time_zone=sent)
            assert login.status_code == 303
            page = client.get("/documents").text
        assert _stored_zone(practice, "patient") == "Asia/Tokyo", sent
        assert "Times are shown in Japan Time" in page
    created = _created_at(practice, practice.own_doc)
    assert local_datetime(created, ZoneInfo("Asia/Tokyo")) in page


def test_a_user_who_never_sent_a_zone_sees_the_portal_default(practice: Practice) -> None:
    with practice.browser("clinician") as client:
        page = client.get("/documents").text
    # The test settings keep the default, UTC: no "point at a time" hint is needed.
    assert "Times are shown in UTC." in page
    created = _created_at(practice, practice.own_doc)
    assert f'title="{utc_datetime(created)}">{local_datetime(created, UTC)}</time>' in page


def test_typed_dates_are_days_in_the_viewer_s_zone() -> None:
    query = DocumentQuery(uploaded_from=date(2026, 7, 1), uploaded_to=date(2026, 7, 1))
    filters = query.filters(NEW_YORK)
    # 1 July in New York (EDT, UTC-4) runs from 04:00 UTC to 04:00 UTC the next day.
    assert filters.created_after == datetime(2026, 7, 1, 4, tzinfo=UTC)
    assert filters.created_before == datetime(2026, 7, 2, 4, tzinfo=UTC)
    in_winter = DocumentQuery(uploaded_from=date(2026, 12, 1)).filters(NEW_YORK)
    assert in_winter.created_after == datetime(2026, 12, 1, 5, tzinfo=UTC)


def test_audit_dates_are_days_in_the_viewer_s_zone() -> None:
    auditor = Principal(
        kind=PrincipalKind.USER, subject_id=uuid.uuid4(), name="auditor", role=Role.AUDITOR
    )
    state = AuditFilterState(occurred_from="2026-07-01", occurred_to="2026-07-01")
    filters = state.event_filters(auditor, NEW_YORK)
    assert filters.occurred_after == datetime(2026, 7, 1, 4, tzinfo=UTC)
    assert filters.occurred_before == datetime(2026, 7, 2, 4, tzinfo=UTC)


@pytest.mark.parametrize("name", ["Europe/London", "America/Argentina/Buenos_Aires", "UTC"])
def test_iana_names_are_known(name: str) -> None:
    zone = known_zone(name)
    assert zone is not None and zone.key == name


@pytest.mark.parametrize(
    "name", ["", "localtime", "posixrules", "Factory", "right/UTC", "Europe/../UTC", "utc "]
)
def test_other_names_are_not(name: str) -> None:
    assert known_zone(name) is None


def test_the_portal_default_zone_must_be_a_real_one() -> None:
    assert Settings(portal_time_zone="Europe/London").portal_time_zone == "Europe/London"
    with pytest.raises(ValidationError, match="not an IANA time zone name"):
        Settings(portal_time_zone="Europe/Atlantis")
