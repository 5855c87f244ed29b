"""Active content in PDFs: JavaScript, automatic actions, launch actions, embedded files.

A letter or lab report has no business running code when opened. Such content is
recorded on the version (and shown to readers); a deployment may refuse it outright
(``MEDVAULT_REFUSE_ACTIVE_PDF``).

Every object of the file is inspected, not just the catalog: actions hide in page and
annotation dictionaries, and since PDF 1.5 most dictionaries sit inside compressed
object streams, where searching the raw bytes for ``/JavaScript`` finds nothing.
pikepdf (qpdf) decodes them; stream data (page content, images) is never decoded.
"""

from __future__ import annotations

from enum import StrEnum
from typing import BinaryIO

import pikepdf


class ActiveContent(StrEnum):
    JAVASCRIPT = "javascript"
    # An action that runs when the document or a page opens, or on other events (/AA).
    AUTO_ACTION = "auto-action"
    LAUNCH = "launch"
    EMBEDDED_FILE = "embedded-file"
    # XFA forms carry their own scripting engine.
    XFA = "xfa"


# Action types that reach outside the page: code, programs, other files, the network.
_ACTION_TYPES = {
    "/JavaScript": ActiveContent.JAVASCRIPT,
    "/Launch": ActiveContent.LAUNCH,
    "/ImportData": ActiveContent.LAUNCH,
    "/SubmitForm": ActiveContent.LAUNCH,
    "/GoToE": ActiveContent.EMBEDDED_FILE,
}


class UnreadablePdf(Exception):
    """The file calls itself a PDF but qpdf cannot parse it."""


# qpdf rebuilds a damaged cross-reference table by scanning the whole file, which on a
# junk "PDF" of a gigabyte costs about 30 CPU-seconds (bench/large_files.py, random
# payload). Small damaged files, common from old scanners, are still recovered (and
# inspected as a reader would see them); above this size a damaged file is reported as
# unreadable instead, for the price of reading its last bytes.
RECOVERY_MAX_BYTES = 8 * 1024 * 1024


def find_active_content(source: BinaryIO, *, size: int) -> frozenset[ActiveContent]:
    """Kinds of active content in the PDF read from ``source`` (seekable); empty if none."""
    try:
        pdf = pikepdf.open(source, attempt_recovery=size <= RECOVERY_MAX_BYTES)
    except pikepdf.PdfError as error:
        raise UnreadablePdf(type(error).__name__) from None
    found: set[ActiveContent] = set()
    with pdf:
        if "/AcroForm" in pdf.Root and "/XFA" in pdf.Root.AcroForm:
            found.add(ActiveContent.XFA)
        for obj in pdf.objects:
            for dictionary in _dictionaries(obj):
                found |= _inspect(dictionary)
    return frozenset(found)


def _dictionaries(obj: pikepdf.Object) -> list[pikepdf.Object]:
    """``obj`` and the dictionaries written inline inside it (not other indirect objects).

    An action is often a direct value (``/OpenAction << /S /JavaScript … >>``), so it
    never appears in ``pdf.objects`` by itself. Indirect children are left to the outer
    loop, which visits every indirect object once, so nothing is walked twice and
    reference cycles cannot recurse forever.
    """
    found: list[pikepdf.Object] = []
    pending = [obj]
    while pending:
        current = pending.pop()
        if isinstance(current, pikepdf.Dictionary | pikepdf.Stream):
            found.append(current)
            children = list(current.values())
        elif isinstance(current, pikepdf.Array):
            children = list(current)
        else:
            continue
        pending.extend(
            child
            for child in children
            if isinstance(child, pikepdf.Object) and not child.is_indirect
        )
    return found


def _inspect(obj: pikepdf.Object) -> set[ActiveContent]:
    found: set[ActiveContent] = set()
    kind = obj.get("/S")
    if kind is not None and str(kind) in _ACTION_TYPES:
        found.add(_ACTION_TYPES[str(kind)])
    if "/JS" in obj:
        found.add(ActiveContent.JAVASCRIPT)
    # A catalog /OpenAction that is an action (not just "open at page 1") and any /AA
    # (additional actions on open, close, page view, field focus…) run without a click.
    open_action = obj.get("/OpenAction")
    if isinstance(open_action, pikepdf.Dictionary):
        found.add(ActiveContent.AUTO_ACTION)
    if "/AA" in obj:
        found.add(ActiveContent.AUTO_ACTION)
    if obj.get("/Type") == pikepdf.Name.EmbeddedFile or "/EF" in obj:
        found.add(ActiveContent.EMBEDDED_FILE)
    return found
