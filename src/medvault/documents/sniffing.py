"""Deciding a file's type from its first bytes, never from what the client claims."""

from __future__ import annotations

import mimetypes

import filetype

# DICOM puts "DICM" after a 128-byte preamble; filetype's matchers read at most this far.
SNIFF_BYTES = 262

EXTENSIONS = {
    "application/pdf": ".pdf",
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/tiff": ".tif",
    "application/dicom": ".dcm",
}


# Other spellings that name the same type; a stored name may keep them.
_ALIASES = {".jpg": (".jpeg", ".jpe"), ".tif": (".tiff",)}


def extensions_for(extension: str) -> frozenset[str]:
    """The canonical ``extension`` and its aliases, lower case."""
    return frozenset((extension.lower(), *_ALIASES.get(extension.lower(), ())))


def extension_for(content_type: str) -> str:
    """A filename extension for a type; operators may allow types beyond the defaults."""
    return EXTENSIONS.get(content_type) or mimetypes.guess_extension(content_type) or ""


def sniff_content_type(head: bytes) -> str | None:
    """The MIME type the magic bytes prove, or None if they match nothing known."""
    if not head:
        return None
    kind = filetype.guess(head)
    return str(kind.mime) if kind is not None else None
