"""Safe stored filenames, keeping the client's original for display.

The stored (and served) name's extension always follows the type sniffed from the
bytes, never the client's claim: a PDF/HTML polyglot sent as ``poly.html`` or
``poly.hta`` is stored and downloaded as ``poly.pdf``, so the clinician's machine
opens it as what the vault verified it to be. An extension that already fits the
type is kept (``scan.jpeg``); one that does not is replaced, keeping the stem; a
suffix that is no extension (``Scan 12.03.2024``) gets the right one appended.
"""

from __future__ import annotations

import re
import unicodedata

from medvault.documents.sniffing import extension_for, extensions_for

MAX_FILENAME_BYTES = 255
MAX_ORIGINAL_CHARS = 1024
# What counts as a file extension to be replaced: short, ASCII, with a letter in it.
_EXTENSION_LIKE = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9]{1,10}$")


def _strip_controls(text: str) -> str:
    # Unicode category C covers control, format (bidi overrides!), surrogate and unassigned.
    return "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")


def _truncate_utf8(text: str, limit: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", "ignore")


def sanitize_filename(raw: str | None, *, extension: str) -> str:
    """NFC, no path parts, no control characters, at most 255 UTF-8 bytes, and an
    extension that fits the sniffed type (``extension``, with its aliases)."""
    name = unicodedata.normalize("NFC", raw or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _strip_controls(name).strip().lstrip(".").strip()
    stem, dot, ext = name.rpartition(".")
    if not (dot and stem):
        stem, ext = name, ""
    elif f".{ext.lower()}" in extensions_for(extension):
        ext = f".{ext}"
    elif _EXTENSION_LIKE.match(ext):
        ext = extension  # a mismatching extension is replaced: poly.html -> poly.pdf
    else:
        stem, ext = name, extension
    if not ext:
        ext = extension
    stem = stem.rstrip(". ") or "document"
    stem = _truncate_utf8(stem, MAX_FILENAME_BYTES - len(ext.encode()))
    return f"{stem}{ext}"


def served_filename(stored: str, content_type: str) -> str:
    """The name a download carries: the stored one, its extension re-checked against
    the version's type, so rows stored before the extension rule are safe as well."""
    return sanitize_filename(stored, extension=extension_for(content_type))


def display_filename(raw: str | None) -> str:
    """The client's name as given (NFC, bounded, controls removed) for showing to people."""
    return _strip_controls(unicodedata.normalize("NFC", raw or ""))[:MAX_ORIGINAL_CHARS]
