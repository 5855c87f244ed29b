"""What the portal tells a person about a version's malware scan and active content.

Whether the portal offers a version's content follows from the very rule the content
routes enforce (``documents.reading.refusal``): a page never shows a Download button
that would only lead to a refusal, and never hides one the routes would honour.
"""

from __future__ import annotations

from dataclasses import dataclass

from medvault.documents import reading
from medvault.documents.active_content import ActiveContent
from medvault.documents.models import DocumentVersion, ScanState, VersionState
from medvault.documents.schemas import ScanOut
from medvault.kit.i18n import N_, gettext
from medvault.kit.i18n import gettext as _
from medvault.runtime import Runtime

UNREADABLE_PDF = "unreadable"  # documents.arrival.UNREADABLE_PDF


@dataclass(frozen=True)
class ScanStatus:
    state: str
    # The badge: a word or two, shown in lists and beside each version.
    label: str
    # The badge's colour (a CSS class); the label carries the meaning, never the colour.
    tone: str
    # One sentence for the document's details.
    description: str
    # Whether the content routes serve it now.
    readable: bool
    # Said prominently on the document page when the content is unavailable or notable.
    notice: str | None = None


# The label and description are marked here and translated in :func:`scan_status`.
_LABELS: dict[ScanState, tuple[str, str, str]] = {
    ScanState.NOT_SCANNED: (
        N_("Not scanned"),
        "neutral",
        N_("Not checked for malware: no scanner was running when it was stored."),
    ),
    ScanState.PENDING: (N_("Scanning…"), "warn", N_("Being checked for malware.")),
    ScanState.CLEAN: (N_("Clean"), "ok", N_("Checked for malware: nothing found.")),
    ScanState.INFECTED: (
        N_("Quarantined"),
        "danger",
        N_("The malware scanner flagged this file."),
    ),
    ScanState.FAILED: (
        N_("Scan failed"),
        "warn",
        N_("The malware check could not finish; it is retried automatically."),
    ),
    ScanState.RELEASED: (
        N_("Released"),
        "neutral",
        N_("The malware scanner flagged this file; an administrator reviewed it and released it."),
    ),
}


def scan_status(
    scan: ScanOut, version_state: str | None, *, blocking: bool, can_upload: bool = False
) -> ScanStatus:
    """The badge and notice for one version.

    ``version_state`` is None where only the document's summary is known (the list): a
    destroyed version is still infected by its scan state, so it is never offered.
    ``blocking`` is the ``scan_policy``: pending and failed versions are refused until
    clean under it, and served meanwhile without it.
    """
    state = ScanState(scan.state)
    # A transient row, never added to a session: the reading rule needs only these two.
    probe = DocumentVersion(scan_state=state, state=version_state or VersionState.AVAILABLE)
    readable = reading.refusal(probe, blocking=blocking) is None
    clean_copy = " " + _("You can upload a clean copy.") if can_upload else ""
    if version_state == VersionState.DESTROYED:
        return ScanStatus(
            state=state.value,
            label=_("Removed"),
            tone="danger",
            description=_(
                "An administrator removed this file after the malware scanner flagged it."
            ),
            readable=False,
            notice=_(
                "An administrator removed this file's content after our malware scanner "
                "flagged it. Its details and history are kept."
            )
            + clean_copy,
        )
    label, tone, description = _LABELS[state]
    notice: str | None = None
    if state == ScanState.INFECTED:
        notice = (
            _(
                "Our malware scanner flagged this file, so it cannot be opened. An "
                "administrator has been alerted."
            )
            + clean_copy
        )
    elif state in (ScanState.PENDING, ScanState.FAILED):
        notice = (
            _(
                "This file is still being checked for malware. It will be available shortly: "
                "reload this page in a moment."
            )
            if not readable
            else _("This file is still being checked for malware. You can open it meanwhile.")
        )
    return ScanStatus(state.value, gettext(label), tone, gettext(description), readable, notice)


_ACTIVE_CONTENT = {
    ActiveContent.JAVASCRIPT.value: N_("This PDF contains scripts (JavaScript)."),
    ActiveContent.AUTO_ACTION.value: N_(
        "This PDF runs actions by itself, for example when it is opened."
    ),
    ActiveContent.LAUNCH.value: N_("This PDF can start other programs or send data elsewhere."),
    ActiveContent.EMBEDDED_FILE.value: N_("This PDF carries other files inside it."),
    ActiveContent.XFA.value: N_("This PDF holds an XFA form, which has scripting of its own."),
    UNREADABLE_PDF: N_(
        "This file could not be checked for active content: it is not a well-formed PDF."
    ),
}


def active_content_notes(kinds: list[str] | None) -> list[str]:
    """One plain sentence per kind of active content found in a PDF ([] for none)."""
    return [
        gettext(_ACTIVE_CONTENT[kind])
        if kind in _ACTIVE_CONTENT
        else _("This PDF holds active content (%(kind)s).", kind=kind)
        for kind in kinds or ()
    ]


def has_active_content(kinds: list[str] | None) -> bool:
    """Whether a PDF holds active content (an unparseable one is flagged, not counted)."""
    return any(kind != UNREADABLE_PDF for kind in kinds or ())


def holds_unscanned(runtime: Runtime) -> bool:
    """Whether unscanned versions are held back (MEDVAULT_SCAN_POLICY=blocking)."""
    return runtime.settings.scan_policy == "blocking"
