"""Safe stored filenames, keeping the client's original for display."""

from __future__ import annotations

import unicodedata

MAX_FILENAME_BYTES = 255
MAX_ORIGINAL_CHARS = 1024


def _strip_controls(text: str) -> str:
    # Unicode category C covers control, format (bidi overrides!), surrogate and unassigned.
    return "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")


def _truncate_utf8(text: str, limit: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", "ignore")


def sanitize_filename(raw: str | None, *, extension: str) -> str:
    """NFC, no path parts, no control characters, at most 255 UTF-8 bytes."""
    name = unicodedata.normalize("NFC", raw or "")
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _strip_controls(name).strip().lstrip(".").strip()
    if not name:
        name = "document" + extension
    stem, dot, ext = name.rpartition(".")
    if dot and stem and len(ext.encode()) <= 16:
        stem = _truncate_utf8(stem, MAX_FILENAME_BYTES - len(ext.encode()) - 1)
        return f"{stem}.{ext}"
    return _truncate_utf8(name, MAX_FILENAME_BYTES)


def display_filename(raw: str | None) -> str:
    """The client's name as given (NFC, bounded, controls removed) for showing to people."""
    return _strip_controls(unicodedata.normalize("NFC", raw or ""))[:MAX_ORIGINAL_CHARS]
