"""Browser test support: Debian's Chromium driven by Playwright, axe-core audits,
screenshots and the 200% zoom check. The fixtures are in ``tests/web/conftest.py``.

Playwright is imported lazily so that this module (and the conftest importing it)
loads on machines without it; the ``browser`` fixture turns that into a skip, or a
failure in CI.
"""

from __future__ import annotations

import functools
import re
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol
from urllib.parse import unquote_plus

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Error, Frame, Page, Playwright

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_ROOT / "artifacts" / "screenshots"

CHROMIUM = Path("/usr/bin/chromium")
# --no-sandbox: CI containers run as root without user namespaces, where Chromium's
# sandbox refuses to start. --disable-gpu: there is no GPU. --disable-background-networking:
# no calls home (nothing but package registries is reachable), so runs stay deterministic.
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking")
# Long enough for two shared cores under load, short enough that a missing element fails
# a scenario in seconds rather than Playwright's default 30 s.
DEFAULT_TIMEOUT_MS = 10_000

AXE_VERSION = "4.14.1"
AXE_JS = REPO_ROOT / "tests" / "web" / "vendor" / "axe-core" / "axe.min.js"
# WCAG 2.0, 2.1 and 2.2 at levels A and AA: 2.1 AA is what EN 301 549 and the NHS require,
# and axe tags each success criterion with the version that introduced it.
WCAG_TAGS = ("wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa")
BLOCKING_IMPACTS = frozenset({"serious", "critical"})
# Best-practice rules run beside the WCAG ones and fail a page whatever their impact:
# the review found two landmarks a screen reader could not tell apart (landmark-unique,
# "moderate" in axe), and issue 14 asks for it to stay fixed.
EXTRA_RULES = frozenset({"landmark-unique"})

ViewportName = Literal["desktop", "phone", "desktop-zoom200"]


class PageFactory(Protocol):
    """The ``page`` fixture: each call opens a page for a new user at ``viewport``.

    ``timezone_id`` is the browser's zone (what the portal stores at login);
    ``javascript=False`` is a browser with script switched off.
    """

    def __call__(
        self,
        viewport: ViewportName = "desktop",
        *,
        timezone_id: str = "Europe/London",
        javascript: bool = True,
    ) -> Page: ...


@dataclass(frozen=True)
class Viewport:
    name: str
    width: int
    height: int
    device_scale_factor: float = 1
    is_mobile: bool = False
    has_touch: bool = False


VIEWPORTS: dict[ViewportName, Viewport] = {
    "desktop": Viewport("desktop", 1280, 800),
    "phone": Viewport("phone", 390, 844, device_scale_factor=2, is_mobile=True, has_touch=True),
    # Exactly what Chrome shows at 200% zoom in a 1280x800 window: half the CSS pixels,
    # twice the device pixels per CSS pixel.
    "desktop-zoom200": Viewport("desktop-zoom200", 640, 400, device_scale_factor=2),
}

# Per-page facts the helpers need later; weak keys so closed pages are forgotten.
_VARIANT: weakref.WeakKeyDictionary[Page, str] = weakref.WeakKeyDictionary()
_CONSOLE_ERRORS: weakref.WeakKeyDictionary[Page, list[str]] = weakref.WeakKeyDictionary()
_REQUESTED: weakref.WeakKeyDictionary[Page, list[str]] = weakref.WeakKeyDictionary()
# Pages opened with script switched off: axe's timers never fire there, so a run would
# wait forever (it hung a test for its whole 600 s timeout).
_SCRIPTLESS: weakref.WeakSet[Page] = weakref.WeakSet()


def chromium_unavailable() -> str | None:
    """Why browser tests cannot run here, or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} is missing (apt-get install chromium)"
    return None


def launch_chromium(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS))


def open_page(
    browser: Browser,
    *,
    base_url: str,
    viewport: Viewport,
    timezone_id: str = "Europe/London",
    javascript: bool = True,
) -> Page:
    """A page in a context of its own: its own cookie jar, so one context is one user.

    Every URL the context requests (navigations, scripts, images, XHR, downloads, in
    any tab it opens) is recorded for ``requested_urls``.
    """
    context = browser.new_context(
        base_url=base_url,
        viewport={"width": viewport.width, "height": viewport.height},
        device_scale_factor=viewport.device_scale_factor,
        is_mobile=viewport.is_mobile,
        has_touch=viewport.has_touch,
        # Fixed locale, zone, scheme and motion keep screenshots comparable between runs.
        locale="en-GB",
        timezone_id=timezone_id,
        java_script_enabled=javascript,
        color_scheme="light",
        reduced_motion="reduce",
    )
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    requested: list[str] = []
    context.on("request", lambda request: requested.append(request.url))
    page = context.new_page()
    _REQUESTED[page] = requested
    if not javascript:
        _SCRIPTLESS.add(page)
    _VARIANT[page] = viewport.name
    errors: list[str] = []
    _CONSOLE_ERRORS[page] = errors

    # CSP violations, failed loads and uncaught exceptions all reach the console as
    # errors: the one place a strict policy that silently blocks something shows up.
    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(f"{message.text} [{message.location.get('url', '?')}]")

    def on_page_error(error: Error) -> None:
        errors.append(f"uncaught {error.name}: {error.message}")

    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    return page


def console_errors(page: Page) -> list[str]:
    """Console errors and uncaught exceptions of a page opened with ``open_page``, oldest first.

    Chromium also requests /favicon.ico on its own; a 404 for it shows up here.
    """
    return list(_CONSOLE_ERRORS.get(page, []))


def requested_urls(page: Page) -> list[str]:
    """Every URL the page's context asked for, in order (see ``open_page``)."""
    return list(_REQUESTED.get(page, []))


# Shorter values (a title "x", a two-letter name) would match ordinary URL text.
MIN_TERM_CHARS = 4


def urls_with_patient_data(urls: Iterable[str], terms: Iterable[str]) -> list[str]:
    """Each URL holding one of ``terms`` (patient names, identifiers, birth dates,
    document titles), decoded and compared case-insensitively, with the term found."""
    wanted = {t.casefold() for t in terms if len(t.strip()) >= MIN_TERM_CHARS}
    found = []
    for url in urls:
        decoded = unquote_plus(url).casefold()
        hits = sorted(term for term in wanted if term in decoded)
        if hits:
            found.append(f"{url} holds {hits}")
    return found


def page_variant(page: Page) -> str:
    """``desktop``, ``phone`` or ``desktop-zoom200``; width x height for foreign pages."""
    if page in _VARIANT:
        return _VARIANT[page]
    size = page.viewport_size
    return f"{size['width']}x{size['height']}" if size else "no-viewport"


# --- accessibility ---------------------------------------------------------------------


@dataclass(frozen=True)
class AxeViolation:
    rule: str
    impact: str | None
    help: str
    help_url: str
    targets: tuple[str, ...]

    def describe(self) -> str:
        lines = [f"- {self.rule} ({self.impact}): {self.help}"]
        lines += [f"    at {target}" for target in self.targets]
        lines.append(f"    see {self.help_url}")
        return "\n".join(lines)


@functools.cache
def _axe_source() -> str:
    source = AXE_JS.read_text(encoding="utf-8")
    # The vendored file and AXE_VERSION must move together (see the vendor README).
    if not source.startswith(f"/*! axe v{AXE_VERSION}\n"):
        raise RuntimeError(f"{AXE_JS} is not axe-core {AXE_VERSION}")
    # `void 0` so the script's completion value is never mistaken for a function to call.
    return source + "\n;void 0"


_AXE_RUN = """async ({tags, disabled, extra}) => {
  const results = await axe.run(document, {
    // axe lives only where it was evaluated, so it cannot audit inside frames; asking
    // it to would wait on timers that never fire in a page with script switched off.
    // A frame is audited by evaluating axe in it (axe_violations takes a Frame).
    iframes: false,
    runOnly: {type: 'tag', values: tags},
    // `rules` switches off the allowed exceptions and adds rules outside the tags.
    rules: Object.fromEntries([
      ...disabled.map((rule) => [rule, {enabled: false}]),
      ...extra.map((rule) => [rule, {enabled: true}]),
    ]),
    resultTypes: ['violations'],
  });
  // A target is a selector list: one entry per iframe or shadow root crossed.
  const show = (target) => target.map((s) => Array.isArray(s) ? s.join(' >>> ') : s).join(' >>> ');
  return results.violations.map((v) => ({
    rule: v.id, impact: v.impact, help: v.help, helpUrl: v.helpUrl,
    targets: v.nodes.map((node) => show(node.target)),
  }));
}"""


def axe_violations(
    page: Page | Frame,
    *,
    tags: Iterable[str] = WCAG_TAGS,
    disabled_rules: Iterable[str] = (),
) -> list[AxeViolation]:
    """Run axe-core on the page as it is now and return every violation, whatever its impact.

    axe is evaluated through Playwright rather than added as a ``<script>`` element. The
    portal's Content-Security-Policy forbids inline scripts, so ``page.add_script_tag``
    (which inserts one) is refused; ``bypass_csp=True`` would make that work but would
    audit a page users never get, with blocked inline styles and scripts suddenly
    applied, and would hide CSP regressions from every test in that context.
    ``page.evaluate`` goes through the DevTools protocol: no element is inserted, so
    ``script-src`` does not apply, and V8 lets debugger-initiated evaluation compile
    code even where the page forbids ``eval``. It runs in the page's main world (axe
    ends up as ``window.axe``), which is harmless: axe only reads the DOM.
    """
    if page in _SCRIPTLESS:
        raise RuntimeError("axe cannot audit a page with script switched off (no timers run)")
    present = page.evaluate("(version) => window.axe?.version === version", AXE_VERSION)
    if not present:
        page.evaluate(_axe_source())
    disabled = list(disabled_rules)
    extra = sorted(EXTRA_RULES - set(disabled))
    raw = page.evaluate(_AXE_RUN, {"tags": list(tags), "disabled": disabled, "extra": extra})
    return [
        AxeViolation(
            rule=item["rule"],
            impact=item["impact"],
            help=item["help"],
            help_url=item["helpUrl"],
            targets=tuple(item["targets"]),
        )
        for item in raw
    ]


def check_accessibility(
    page: Page,
    *,
    tags: Iterable[str] = WCAG_TAGS,
    allow: Mapping[str, str] | None = None,
) -> list[AxeViolation]:
    """Fail on any serious or critical WCAG A/AA violation, or any of ``EXTRA_RULES``;
    return the other minor and moderate ones.

    ``allow`` maps an axe rule id to the reason it is switched off, so every exception
    says why it exists in the test that makes it.
    """
    violations = axe_violations(page, tags=tags, disabled_rules=(allow or {}).keys())
    blocking = [v for v in violations if v.impact in BLOCKING_IMPACTS or v.rule in EXTRA_RULES]
    if blocking:
        details = "\n".join(v.describe() for v in blocking)
        raise AssertionError(
            f"{len(blocking)} serious or critical accessibility violation(s) on {page.url} "
            f"({page_variant(page)}, axe-core {AXE_VERSION}):\n{details}"
        )
    return violations


# --- screenshots -----------------------------------------------------------------------

_SCREENSHOT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def screenshot(page: Page, name: str) -> Path:
    """Save a full-page PNG as ``artifacts/screenshots/<name>-<variant>.png``."""
    if not _SCREENSHOT_NAME.fullmatch(name):
        raise ValueError(f"screenshot name must be a plain file name, got {name!r}")
    path = SCREENSHOTS / f"{name}-{page_variant(page)}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=path, full_page=True, animations="disabled", caret="hide")
    return path


def failure_screenshots(
    pages: Iterable[Page], test_id: str, *, folder: Path = SCREENSHOTS / "failed"
) -> list[Path]:
    """Screenshots of every page still open when a test failed, for the CI artifacts."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_id).strip("_")[-150:]
    paths = []
    for index, page in enumerate(pages):
        if page.is_closed():
            continue
        path = folder / f"{stem}-{index}-{page_variant(page)}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=path, full_page=True, animations="disabled", caret="hide")
        paths.append(path)
    return paths


# --- zoom and reflow -------------------------------------------------------------------


@dataclass(frozen=True)
class HorizontalOverflow:
    scroll_width: int
    viewport_width: int
    # The outermost elements reaching past the right edge: where to look first.
    culprits: tuple[str, ...]

    @property
    def overflows(self) -> bool:
        return self.scroll_width > self.viewport_width


_MEASURE_OVERFLOW = """() => {
  const root = document.documentElement;
  // Playwright hides scrollbars in headless mode, so both widths are equal there; the
  // smaller one is the right bound wherever a classic scrollbar does take space.
  const viewport = Math.min(window.innerWidth, root.clientWidth);
  const beyond = (el) => el.getBoundingClientRect().right + window.scrollX > viewport + 0.5;
  const name = (el) => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
    [...el.classList].slice(0, 2).map((c) => '.' + c).join('');
  const culprits = root.scrollWidth > viewport && document.body
    ? [...document.body.querySelectorAll('*')]
        .filter((el) => beyond(el) && !(el.parentElement && beyond(el.parentElement)))
        .slice(0, 5).map(name)
    : [];
  return {scrollWidth: root.scrollWidth, viewportWidth: viewport, culprits};
}"""


def horizontal_overflow(page: Page) -> HorizontalOverflow:
    raw = page.evaluate(_MEASURE_OVERFLOW)
    return HorizontalOverflow(raw["scrollWidth"], raw["viewportWidth"], tuple(raw["culprits"]))


def assert_no_horizontal_scroll(page: Page) -> None:
    """Fail when the page scrolls sideways: ``scrollWidth`` beyond the visible width."""
    measured = horizontal_overflow(page)
    if measured.overflows:
        raise AssertionError(
            f"{page.url} ({page_variant(page)}) scrolls horizontally: content is "
            f"{measured.scroll_width} CSS px wide in a {measured.viewport_width} px viewport; "
            f"outermost elements past the edge: {', '.join(measured.culprits) or 'none found'}"
        )


def check_zoom(page: Page, factor: float, *, screenshot_as: str | None = None) -> None:
    """Re-lay the current page out as browser zoom ``factor`` would and forbid sideways scroll.

    Browser zoom divides the CSS viewport by the factor (1280 CSS px become 640 at 200%)
    and multiplies the device pixel ratio by it, then reflows: media queries see 640px.
    Shrinking the viewport in place gives that same CSS layout without a reload, so the
    state a scenario reached (an open form, a validation error after a POST) is what gets
    checked. The device pixel ratio stays the context's; only ``resolution`` media queries
    and ``srcset`` choices depend on it. For pixel-exact 200% pages, open the page with
    ``page("desktop-zoom200")`` instead. CSS ``zoom`` on the root is no substitute: media
    queries keep seeing the full width, so breakpoints never fire.
    """
    original = page.viewport_size
    if original is None:
        raise ValueError("check_zoom needs a page with a fixed viewport (see open_page)")
    variant = page_variant(page)
    page.set_viewport_size(
        {"width": round(original["width"] / factor), "height": round(original["height"] / factor)}
    )
    _VARIANT[page] = f"{variant}-zoom{round(factor * 100)}"
    try:
        # Let resize handlers and the next frame's layout run before measuring.
        page.evaluate("() => new Promise((done) => requestAnimationFrame(() => done(null)))")
        if screenshot_as is not None:
            screenshot(page, screenshot_as)
        assert_no_horizontal_scroll(page)
    finally:
        page.set_viewport_size(original)
        _VARIANT[page] = variant


def zoom_200(page: Page, *, screenshot_as: str | None = None) -> None:
    """The page works at 200% zoom (WCAG 1.4.4) without horizontal scrolling."""
    check_zoom(page, 2, screenshot_as=screenshot_as)
