"""The words the portal's scripts show, in the page's language.

Scripts have no catalogue of their own: each page carries these, translated, in a
``<script type="application/json">`` data block (never executed, so the Content-Security-
Policy's ``script-src 'self'`` still holds) that ``portal.js``, ``upload.js`` and
``resumable.js`` read. Values are written ``%(name)s``, as in the Python catalogue.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any, Final

from medvault.kit import i18n
from medvault.kit.i18n import N_, gettext, plural_noop

MESSAGES: Final[dict[str, str]] = {
    "viewer.show": N_("Show the document here (%(size)s)"),
    "bulk.none": N_("Tick documents to download several at once."),
    "session.ended": N_("You have been logged out because nothing happened for a while."),
    "session.ended_draft": N_(
        "You have been logged out because nothing happened for a while. Your document is "
        "saved as a draft: log in again to go on with it."
    ),
    "draft.saved": N_("Draft saved at %(time)s."),
    "draft.refused": N_("The draft could not be saved. Keep this page open."),
    "draft.offline": N_("The draft could not be saved. Check your connection."),
    "link.creating": N_("Creating a link…"),
    "link.failed": N_("The link could not be created."),
    "link.copied": N_("Link copied. It works until %(time)s."),
    "link.copy_this": N_("Copy this link (it works until %(time)s): "),
    "link.label": N_("Download link"),
    "link.offline": N_("The link could not be created. Check your connection."),
    "upload.session_ended": N_("Your session has ended. Log in again, then retry."),
    "upload.failed": N_("The upload failed. Check your connection and try again."),
    "upload.patient_first": N_("Choose the patient these files belong to first."),
    "upload.file_name": N_("%(name)s (%(size)s)"),
    "upload.too_large": N_("This file is %(size)s; the limit is %(limit)s."),
    "upload.remove": N_("Remove"),
    "upload.remove_label": N_("Remove %(name)s"),
    "upload.ready": N_("Ready to upload."),
    "upload.choose_type": N_("Choose what this file is."),
    "upload.give_title": N_("Give this file a title."),
    "upload.progress_label": N_("Upload progress of %(name)s"),
    "upload.cancel": N_("Cancel"),
    "upload.cancel_label": N_("Cancel upload of %(name)s"),
    "upload.stored": N_("Stored. "),
    "upload.open": N_("Open %(title)s"),
    "upload.duplicate": N_("This file is already stored for this patient. "),
    "upload.open_existing": N_("Open the existing document"),
    "upload.cancelled": N_("Cancelled. Nothing was stored."),
    "upload.uploading": N_("Uploading…"),
    # Resumable uploads (static/resumable.js).
    "upload.sent": N_("%(sent)s of %(total)s sent (%(percent)s)"),
    "upload.pause": N_("Pause"),
    "upload.pause_label": N_("Pause upload of %(name)s"),
    "upload.resume": N_("Resume"),
    "upload.resume_label": N_("Resume upload of %(name)s"),
    "upload.paused": N_("Paused. Press Resume to go on from here."),
    "upload.resuming": N_("Resuming…"),
    "upload.offline": N_(
        "The connection was lost. The upload goes on by itself when you are back online."
    ),
    "upload.stalled": N_("The vault cannot be reached just now. Press Resume to try again."),
    "upload.cancelling": N_("Cancelling…"),
    "upload.cancel_failed": N_(
        "Stopped, but what was sent could not be deleted just now. The vault deletes it "
        "when it expires."
    ),
    "upload.interrupted": N_("This upload stopped before it was finished."),
    "upload.choose_again": N_("Choose %(name)s again"),
    # An unfinished upload whose file name this tab does not know (only its size).
    "upload.unnamed_file": N_("the %(size)s file"),
    "upload.discard": N_("Discard"),
    "upload.discard_label": N_("Discard the upload of %(name)s"),
    "upload.gone": N_("This upload can no longer be continued. Upload the file again."),
    "upload.not_same_file": N_(
        "That is not the file this upload started with. Choose %(name)s (%(size)s)."
    ),
    "size.KB": N_("KB"),
    "size.MB": N_("MB"),
    "size.GB": N_("GB"),
    "size.TB": N_("TB"),
}

# The PDF viewer's frame (static/pdf-viewer.html): only the document page carries them,
# on the viewer's element, and portal.js posts them into the frame with the document.
VIEWER_MESSAGES: Final[dict[str, str]] = {
    "viewer.toolbar": N_("Document viewer"),
    "viewer.prev": N_("Previous page"),
    "viewer.next": N_("Next page"),
    "viewer.page_of": N_("Page %(page)s of %(count)s"),
    "viewer.zoom_out": N_("Zoom out"),
    "viewer.zoom_in": N_("Zoom in"),
    "viewer.fit": N_("Fit width"),
    "viewer.loading": N_("Loading the document…"),
    "viewer.pages": N_("Pages of the document"),
    "viewer.failed": N_("This PDF cannot be shown here. Download it to open it on your device."),
}

PLURALS: Final[dict[str, tuple[str, str]]] = {
    "bulk.selected": plural_noop("%(num)s selected.", "%(num)s selected."),
    "session.warning": plural_noop(
        "You will be logged out in %(num)s minute because nothing has happened for a while.",
        "You will be logged out in %(num)s minutes because nothing has happened for a while.",
    ),
    "upload.start": plural_noop("Upload %(num)s file", "Upload %(num)s files"),
    "size.bytes": plural_noop("%(num)s byte", "%(num)s bytes"),
}


def script_messages() -> Mapping[str, Any]:
    """What a page hands its scripts: the language, its words, and its plural forms."""
    return _script_messages(i18n.current_language())


def viewer_words() -> Mapping[str, str]:
    return _viewer_words(i18n.current_language())


# Catalogues do not change while the vault runs: each language's words are worked out
# once (the plural forms alone took about 2 ms, on every page). Shared, so read-only
# (the Mapping type says so to every caller).
@cache
def _script_messages(language: str) -> Mapping[str, Any]:
    with i18n.language(language):
        return {
            "language": language,
            "messages": {key: gettext(text) for key, text in MESSAGES.items()},
            "plurals": {key: i18n.plural_forms(*pair) for key, pair in PLURALS.items()},
        }


@cache
def _viewer_words(language: str) -> Mapping[str, str]:
    with i18n.language(language):
        return {key: gettext(text) for key, text in VIEWER_MESSAGES.items()}
