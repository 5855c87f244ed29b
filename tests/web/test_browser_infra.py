"""The browser test infrastructure itself, against a throwaway app (not the portal).

Each check is one that could fail: axe must report a page we broke on purpose and pass
one we did not, the zoom check must catch a page that overflows at 200%, screenshots
must be real PNGs of the right size, and all of it under a CSP as strict as the
portal's, which the browser must actually enforce.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse

from tests.support.backends import Backend
from tests.support.browser import (
    SCREENSHOTS,
    VIEWPORTS,
    PageFactory,
    ViewportName,
    axe_violations,
    check_accessibility,
    console_errors,
    failure_screenshots,
    horizontal_overflow,
    open_page,
    requested_urls,
    screenshot,
    urls_with_patient_data,
    zoom_200,
)
from tests.support.factories import png_bytes
from tests.support.live_server import LiveServer

if TYPE_CHECKING:
    from playwright.sync_api import Browser

# What the portal will send: nothing inline, everything from its own origin.
PORTAL_LIKE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
STYLESHEET = """
body { font-family: "DejaVu Sans", sans-serif; margin: 0 1rem; color: #1a1a1a; background: #fff; }
.fixed-wide { width: 1000px; background: #e8e8e8; }
.fluid-wide { width: 1000px; max-width: 100%; background: #e8e8e8; }
"""


def _document(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{title}</title><link rel="stylesheet" href="/site.css"></head>'
        f"<body><main><h1>{title}</h1>{body}</main></body></html>"
    )


PAGES = {
    "clean": _document(
        "Documents",
        '<p>Two documents.</p><img src="/pixel.png" alt="Clinic logo" width="40" height="40">'
        '<form method="post" action="/search"><label for="q">Search</label>'
        '<input id="q" name="q" type="search"><button type="submit">Search</button></form>',
    ),
    "broken": _document(
        "Broken",
        '<img id="no-alt" src="/pixel.png" width="40" height="40">'
        '<form method="post" action="/search"><input id="unlabelled" name="q" type="text">'
        "</form>",
    ),
    # A WCAG-tagged rule of moderate impact: reported, but not a reason to fail.
    "moderate": _document("Moderate", "<p>Fine otherwise.</p>").replace(
        '<html lang="en">', '<html lang="en" xml:lang="fr">'
    ),
    "inline-script": _document(
        "Inline", "<p>Static.</p><script>document.body.dataset.inline = 'ran';</script>"
    ),
    "fixed-wide": _document(
        "Wide", '<table class="fixed-wide" id="results"><tr><td>x</td></tr></table>'
    ),
    "fluid-wide": _document("Fluid", '<div class="fluid-wide" id="results">x</div>'),
    "tall": _document("Tall", "".join(f"<p>Paragraph {n}.</p>" for n in range(80))),
}


def throwaway_app() -> FastAPI:
    app = FastAPI()

    @app.middleware("http")
    async def strict_csp(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = PORTAL_LIKE_CSP
        return response

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/site.css")
    def site_css() -> Response:
        return Response(STYLESHEET, media_type="text/css")

    # Chromium asks for /favicon.ico by itself; answering keeps the console clean.
    @app.get("/pixel.png")
    @app.get("/favicon.ico")
    def pixel() -> Response:
        return Response(png_bytes(), media_type="image/png")

    @app.get("/remember")
    def remember() -> Response:
        response = HTMLResponse(_document("Remembered", "<p>Cookie set.</p>"))
        response.set_cookie("session", "alice", httponly=True, samesite="strict")
        return response

    @app.get("/whoami")
    def whoami(request: Request) -> HTMLResponse:
        who = request.cookies.get("session", "nobody")
        return HTMLResponse(_document("Who", f'<p id="who">{who}</p>'))

    @app.get("/{name}")
    def page(name: str) -> HTMLResponse:
        if name not in PAGES:
            raise HTTPException(status_code=404)
        return HTMLResponse(PAGES[name])

    return app


@pytest.fixture(scope="module")
def throwaway() -> Iterator[LiveServer]:
    with LiveServer(throwaway_app()) as server:
        yield server


@pytest.fixture
def browser_base_url(throwaway: LiveServer) -> str:
    return throwaway.url


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_pages_render_under_a_csp_the_browser_enforces(page: PageFactory) -> None:
    p = page()
    response = p.goto("/inline-script")
    assert response is not None and response.ok
    assert "script-src 'self'" in (response.header_value("content-security-policy") or "")
    assert p.get_by_role("heading", level=1).inner_text() == "Inline"
    # The inline script was refused, and the refusal was recorded: no bypass_csp here.
    assert p.evaluate("() => document.body.dataset.inline") is None
    assert any("Content Security Policy" in line for line in console_errors(p)), console_errors(p)


def test_axe_runs_under_the_strict_csp_and_passes_a_clean_page(page: PageFactory) -> None:
    p = page()
    p.goto("/clean")
    assert check_accessibility(p) == []
    assert console_errors(p) == []


def test_axe_reports_serious_violations_with_rule_help_and_target(page: PageFactory) -> None:
    p = page()
    p.goto("/broken")
    with pytest.raises(AssertionError) as failure:
        check_accessibility(p)
    message = str(failure.value)
    assert "2 serious or critical" in message
    assert "- image-alt (critical): Images must have alternative text" in message
    assert "at #no-alt" in message
    assert "- label (critical):" in message
    assert "at #unlabelled" in message
    assert "https://dequeuniversity.com/rules/axe/" in message


def test_allowed_rules_are_switched_off_with_a_reason(page: PageFactory) -> None:
    p = page()
    p.goto("/broken")
    with pytest.raises(AssertionError) as failure:
        check_accessibility(p, allow={"image-alt": "decorative pixel in this self-test"})
    assert "1 serious or critical" in str(failure.value)
    assert "image-alt" not in str(failure.value)


def test_moderate_violations_are_returned_not_raised(page: PageFactory) -> None:
    p = page()
    p.goto("/moderate")
    violations = check_accessibility(p)
    assert [(v.rule, v.impact) for v in violations] == [("html-xml-lang-mismatch", "moderate")]


def test_two_landmarks_with_one_name_fail_the_check(page: PageFactory) -> None:
    # landmark-unique is "moderate" in axe; the portal treats it as blocking.
    p = page()
    p.set_content(
        _document("twins", '<nav aria-label="Pages">a</nav><nav aria-label="Pages">b</nav>')
    )
    with pytest.raises(AssertionError, match="landmark-unique"):
        check_accessibility(p)


def test_axe_refuses_a_page_without_script_instead_of_hanging(page: PageFactory) -> None:
    p = page(javascript=False)
    p.goto("/clean")
    with pytest.raises(RuntimeError, match="script switched off"):
        axe_violations(p)


def test_axe_survives_navigation(page: PageFactory) -> None:
    # A navigation discards window.axe; the helper must notice and inject it again.
    p = page()
    p.goto("/clean")
    assert axe_violations(p) == []
    p.goto("/broken")
    assert {v.rule for v in axe_violations(p)} == {"image-alt", "label"}


def test_every_requested_url_is_recorded_and_patient_data_in_one_is_found(
    page: PageFactory,
) -> None:
    p = page()
    p.goto("/clean?search=Ownfamily%20Alicia")
    p.goto("/tall")
    urls = requested_urls(p)
    assert [u for u in urls if u.endswith(("/clean?search=Ownfamily%20Alicia", "/tall"))]
    terms = {"Ownfamily", "9990002223", "Own lab report", "x"}
    leaks = urls_with_patient_data(urls, terms)
    # Found decoded and whatever its case; the one-letter term is too short to look for.
    assert len(leaks) == 1 and "['ownfamily']" in leaks[0], leaks
    assert urls_with_patient_data(["http://h/documents?view=abc"], terms) == []
    assert urls_with_patient_data(["http://h/x?q=OWN+LAB+REPORT"], terms) != []


def test_screenshots_are_full_page_pngs_per_viewport(page: PageFactory) -> None:
    desktop, phone = page(), page("phone")
    for p in (desktop, phone):
        p.goto("/tall")
    desktop_png = screenshot(desktop, "infra-selftest-tall")
    phone_png = screenshot(phone, "infra-selftest-tall")
    assert desktop_png == SCREENSHOTS / "infra-selftest-tall-desktop.png"
    assert phone_png == SCREENSHOTS / "infra-selftest-tall-phone.png"
    desktop_width, desktop_height = png_size(desktop_png)
    phone_width, phone_height = png_size(phone_png)
    assert desktop_width == 1280
    assert desktop_height > 800  # full page, not just the viewport
    assert phone_width == 390 * 2  # device scale factor 2
    assert phone_height > 844 * 2


def test_screenshot_names_stay_inside_the_artifacts_folder(page: PageFactory) -> None:
    p = page()
    with pytest.raises(ValueError, match="plain file name"):
        screenshot(p, "../escape")


def test_viewports_match_what_a_user_would_have(page: PageFactory) -> None:
    metrics = "() => [window.innerWidth, window.innerHeight, window.devicePixelRatio]"
    expected: dict[ViewportName, list[int]] = {
        "desktop": [1280, 800, 1],
        "phone": [390, 844, 2],
        "desktop-zoom200": [640, 400, 2],
    }
    for name, values in expected.items():
        p = page(name)
        p.goto("/clean")
        assert p.evaluate(metrics) == values, name


def test_each_page_is_a_separate_user(page: PageFactory) -> None:
    alice, bob = page(), page()
    alice.goto("/remember")
    alice.goto("/whoami")
    bob.goto("/whoami")
    assert alice.locator("#who").inner_text() == "alice"
    assert bob.locator("#who").inner_text() == "nobody"


def test_zoom_200_catches_a_page_that_scrolls_sideways(page: PageFactory) -> None:
    p = page()
    p.goto("/fixed-wide")
    # 1000px fits the 1280px desktop, so only the zoom exposes the problem.
    assert not horizontal_overflow(p).overflows
    with pytest.raises(AssertionError) as failure:
        zoom_200(p, screenshot_as="infra-selftest-fixed-wide")
    assert "640 px viewport" in str(failure.value)
    assert "table#results.fixed-wide" in str(failure.value)
    # A full-page screenshot spans the whole scrollable width: 1000px table + 16px margin.
    assert "content is 1016 CSS px wide" in str(failure.value)
    assert png_size(SCREENSHOTS / "infra-selftest-fixed-wide-desktop-zoom200.png")[0] == 1016
    # The check restores the page for the rest of the scenario.
    assert p.viewport_size == {"width": 1280, "height": 800}
    assert p.evaluate("() => window.innerWidth") == 1280


def test_zoom_200_passes_a_page_that_reflows(page: PageFactory) -> None:
    p = page()
    p.goto("/fluid-wide")
    zoom_200(p)
    zoomed = page("desktop-zoom200")
    zoomed.goto("/fluid-wide")
    assert not horizontal_overflow(zoomed).overflows


def test_failure_screenshots_capture_open_pages(page: PageFactory, tmp_path: Path) -> None:
    p, closed = page("phone"), page()
    p.goto("/clean")
    closed.close()
    # tmp_path, not artifacts/: CI must not collect a "failure" from a passing run.
    paths = failure_screenshots(
        [p, closed], "tests/web/test_x.py::test_y[sqlite-fs]", folder=tmp_path
    )
    assert paths == [tmp_path / "tests_web_test_x.py_test_y_sqlite-fs-0-phone.png"]
    assert png_size(paths[0])[0] == 390 * 2


def test_open_page_works_without_the_fixture(browser_base_url: str, browser: Browser) -> None:
    # Helpers take plain Playwright pages, for scenarios that need their own contexts.
    p = open_page(browser, base_url=browser_base_url, viewport=VIEWPORTS["desktop"])
    try:
        p.goto("/clean")
        assert check_accessibility(p) == []
    finally:
        p.context.close()


# --- the portal fixture: the real app on real HTTP, per backend ------------------------


def _portal_checks(portal: LiveServer, browser: Browser) -> None:
    assert httpx.get(f"{portal.url}/healthz").status_code == 200
    p = open_page(browser, base_url=portal.url, viewport=VIEWPORTS["desktop"])
    try:
        response = p.goto("/healthz")
        assert response is not None and response.ok
        assert "default-src" in (response.header_value("content-security-policy") or "")
    finally:
        p.context.close()


def test_portal_runs_on_sqlite_by_default(
    portal: LiveServer, browser: Browser, backend: Backend
) -> None:
    assert backend.name == "sqlite-fs"
    _portal_checks(portal, browser)


@pytest.mark.parametrize("backend", ["sqlite-fs", "pg-s3"], indirect=True)
def test_backend_can_be_parametrised_indirectly(
    backend: Backend, request: pytest.FixtureRequest
) -> None:
    assert backend.name == request.node.callspec.params["backend"]
    on_s3 = (backend.settings.storage_url or "").startswith("s3://")
    assert on_s3 == (backend.name == "pg-s3")


@pytest.mark.browser_backend("pg-s3")
def test_portal_runs_on_pg_s3_when_marked(
    portal: LiveServer, browser: Browser, backend: Backend
) -> None:
    assert backend.name == "pg-s3"
    _portal_checks(portal, browser)


def test_tests_after_the_browser_can_still_run_their_own_event_loop() -> None:
    """Regression: a session-wide Playwright left a loop running on the main thread.

    Every later test that called ``asyncio.run()`` then failed; the full run hid it
    only because tests/web sorted last. Run the reported order in a fresh pytest.
    """
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:randomly",
            "-p",
            "no:cacheprovider",
            "tests/web/test_scenarios.py::test_login_page_is_accessible",
            "tests/fhir/wire/test_json_stream.py",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert " passed" in result.stdout and "failed" not in result.stdout
