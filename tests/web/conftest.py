"""Fixtures for browser scenarios against the portal: Debian's Chromium through Playwright.

A scenario asks for ``page`` (a factory: one call, one user with a cookie jar of their
own) and, to seed data, ``runtime`` or ``make_user``; the portal is served for it::

    def test_documents_page(page: PageFactory, make_user: UserFactory) -> None:
        user = make_user(Role.CLINICIAN)
        desktop = page()
        desktop.goto("/login")
        ...  # log in through the form
        desktop.goto("/documents")
        check_accessibility(desktop)
        screenshot(desktop, "documents")
        zoom_200(desktop)

Backends: the rest of the suite runs every test on both sqlite-fs and pg-s3. Here a
scenario runs on sqlite-fs unless it asks for another backend, because each one costs
seconds of browser time and the storage layer beneath the portal is already proven on
both backends by the API suite. A few scenarios that cross the storage boundary
(download, upload) should also run on pg-s3, with either

    @pytest.mark.browser_backend("pg-s3")            # that backend only
    @pytest.mark.parametrize("backend", ["sqlite-fs", "pg-s3"], indirect=True)  # both
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from medvault.app import create_app
from medvault.runtime import Runtime
from tests.support.backends import Backend, backend_settings
from tests.support.browser import (
    VIEWPORTS,
    PageFactory,
    ViewportName,
    chromium_unavailable,
    failure_screenshots,
    launch_chromium,
    open_page,
    requested_urls,
    urls_with_patient_data,
)
from tests.support.inspect import patient_data
from tests.support.live_server import LiveServer
from tests.support.services import S3Server, unavailable
from tests.support.users import UserFactory
from tests.web.portal_world import Practice, build_practice

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

BACKENDS = ("sqlite-fs", "pg-s3")
_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item, so ``page`` knows at teardown if the test failed."""
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """One Chromium while tests/web runs: launching costs about a second, a context milliseconds.

    Package scope, not session: Playwright's sync API keeps an asyncio loop marked as
    running on the main thread for as long as it is open, so every later test that calls
    ``asyncio.run()`` would fail. Pytest closes a package fixture as soon as the next test
    lies outside tests/web (and opens it again if, in a random order, one comes back).
    """
    reason = chromium_unavailable()
    if reason is not None:
        unavailable(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        started = time.perf_counter()
        chromium = launch_chromium(playwright)
        # Shown with -s or in CI logs; the cost every browser run pays once.
        print(f"\nchromium {chromium.version} up in {time.perf_counter() - started:.2f}s")
        yield chromium
        chromium.close()


@pytest.fixture
def backend(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> Backend:
    """sqlite-fs unless the test is marked ``browser_backend`` or parametrised indirectly."""
    marker = request.node.get_closest_marker("browser_backend")
    name = getattr(request, "param", None) or (marker.args[0] if marker else "sqlite-fs")
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose from {BACKENDS}")
    # PostgreSQL databases and the S3 server are session-wide; only start them when asked.
    pg_urls: tuple[str, str, str] | None = None
    s3: S3Server | None = None
    if name == "pg-s3":
        pg_urls = request.getfixturevalue("pg_urls")
        s3 = request.getfixturevalue("s3")
    settings = backend_settings(name, tmp_path, pg_urls, s3, sqlite_template=sqlite_template)
    return Backend(name, settings)


@pytest.fixture
def practice(
    app: FastAPI, runtime: Runtime, client: TestClient, make_user: UserFactory
) -> Practice:
    """Two patients, their documents and a user of every role (see ``portal_world``)."""
    return build_practice(app, runtime, client, make_user)


@pytest.fixture
def portal(runtime: Runtime) -> Iterator[LiveServer]:
    """The whole app (API and portal) on real HTTP at ``portal.url``, over the test's runtime.

    Seed data through ``runtime`` (or ``make_user``) before or during the scenario: the
    server thread and the test share the same databases and blob store.
    """
    with LiveServer(create_app(runtime=runtime)) as server:
        yield server


@pytest.fixture
def browser_base_url(portal: LiveServer) -> str:
    """Where ``page`` points; the infra self-test overrides it with a throwaway app."""
    return portal.url


@pytest.fixture
def page(
    browser: Browser, browser_base_url: str, request: pytest.FixtureRequest
) -> Iterator[PageFactory]:
    """``page()`` opens a desktop page, ``page("phone")`` a phone one; each is a new user.

    Every call gets a fresh browser context, so cookies never leak between the users of
    one scenario. Relative URLs resolve against the portal: ``p.goto("/login")``. When
    the test fails, every page still open is saved under artifacts/screenshots/failed/.
    """
    opened: list[Page] = []

    def factory(
        viewport: ViewportName = "desktop",
        *,
        timezone_id: str = "Europe/London",
        javascript: bool = True,
    ) -> Page:
        new = open_page(
            browser,
            base_url=browser_base_url,
            viewport=VIEWPORTS[viewport],
            timezone_id=timezone_id,
            javascript=javascript,
        )
        opened.append(new)
        return new

    yield factory

    call = request.node.stash.get(_REPORTS, {}).get("call")
    if call is not None and call.failed:
        _save_failure_screenshots(opened, request.node.nodeid)
    urls = [url for opened_page in opened for url in requested_urls(opened_page)]
    for opened_page in opened:
        opened_page.context.close()
    # Issue 14: no patient data in any URL the whole browser suite visits. Checked after
    # every test against that test's own patients and documents.
    if urls and "runtime" in request.fixturenames:
        leaks = urls_with_patient_data(urls, patient_data(request.getfixturevalue("runtime")))
        assert not leaks, "patient data in URLs:\n" + "\n".join(leaks)


def _save_failure_screenshots(pages: list[Page], test_id: str) -> None:
    from playwright.sync_api import Error

    try:
        for path in failure_screenshots(pages, test_id):
            print(f"failure screenshot: {path}")
    except Error as exc:  # a crashed page must not hide the failure that matters
        print(f"failure screenshot not saved: {exc}")
