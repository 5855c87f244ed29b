"""The confined side of ``medvault.processing.derive``: a request and a document on
stdin, one framed answer on stdout (the wire is described in derive.py).

Started only by derive.py, which set its rlimits before this interpreter ran. It still
refuses to read a document unless RLIMIT_FSIZE is 0, so a mistaken launch (by hand,
by another caller) cannot turn it into something that writes plaintext to a file.

Every failure leaves as a reason code; an exception's own text stays here, since a
parser's message can quote the document. A MemoryError is answered with a frame built
before the document was read: building one afterwards may need the memory that ran out.
"""

from __future__ import annotations

import json
import os
import resource
import sys
from dataclasses import dataclass
from typing import IO, Any

from medvault.processing import derive_formats as formats
from medvault.processing.derive import EXIT_MEMORY, IMAGE_FORMATS, PDF, DeriveLimits
from medvault.processing.derive_formats import Refused

_REQUEST_MAX = 4096
_READ_SIZE = 1024 * 1024


@dataclass(frozen=True)
class _Request:
    task: str  # "preview" or "text"
    content_type: str
    limits: DeriveLimits


def main() -> None:
    if resource.getrlimit(resource.RLIMIT_FSIZE) != (0, 0):
        sys.stderr.write("derive_child runs only under medvault.processing.derive\n")
        os._exit(2)
    out = sys.stdout.buffer
    out_of_memory = _frame({"ok": False, "reason": "memory"}, [])
    try:
        header, parts = _answer(sys.stdin.buffer)
        pieces = [_frame(header, parts), *parts]
    except MemoryError:
        # Leaving the handler dropped the traceback, and with it the document.
        pieces = [out_of_memory]
    try:
        for piece in pieces:
            out.write(piece)
        out.flush()
    except MemoryError:
        os._exit(EXIT_MEMORY)
    # No interpreter teardown: nothing is left to flush, and pdfium's finalisers have
    # nothing to add to an answer already sent.
    os._exit(0)


def _answer(stdin: IO[bytes]) -> tuple[dict[str, Any], list[bytes]]:
    try:
        request = _read_request(stdin)
        formats.configure_pillow(request.limits.max_pixels)
        data = _read_document(stdin, request.limits.max_input_bytes)
        if request.task == "preview":
            return _preview(request, data)
        return _text(request, data)
    except Refused as refusal:
        return {"ok": False, "reason": refusal.reason}, []
    except MemoryError:
        raise
    except Exception:
        # pdfium's and Pillow's many ways of rejecting a file (OSError, SyntaxError, ...).
        return {"ok": False, "reason": "unreadable"}, []


def _read_request(stdin: IO[bytes]) -> _Request:
    line = stdin.readline(_REQUEST_MAX)
    request = json.loads(line)
    task, content_type = request["task"], request["content_type"]
    if task not in {"preview", "text"}:
        raise ValueError("unknown task")
    if content_type != PDF and content_type not in IMAGE_FORMATS:
        raise Refused("unsupported-type")
    return _Request(task, content_type, DeriveLimits(**request["limits"]))


def _read_document(stdin: IO[bytes], max_bytes: int) -> bytes:
    """The whole document, bounded: pdfium and Pillow both want it in memory."""
    chunks, total = [], 0
    while chunk := stdin.read(_READ_SIZE):
        total += len(chunk)
        if total > max_bytes:
            raise Refused("too-large")
        chunks.append(chunk)
    if not total:
        raise Refused("unreadable")
    return b"".join(chunks)


def _preview(request: _Request, data: bytes) -> tuple[dict[str, Any], list[bytes]]:
    if request.content_type == PDF:
        images = formats.pdf_preview(data, request.limits)
    else:
        images = formats.image_preview(data, request.content_type, request.limits)
    header = {
        "ok": True,
        "media_type": "image/webp",
        "width": images.width,
        "height": images.height,
        "page_count": images.page_count,
    }
    return header, [images.thumbnail, images.page]


def _text(request: _Request, data: bytes) -> tuple[dict[str, Any], list[bytes]]:
    if request.content_type == PDF:
        pages = formats.pdf_text(data, request.limits)
    else:
        pages = formats.image_text(data, request.content_type, request.limits)
    header = {
        "ok": True,
        "source": pages.source(),
        "pages_read": len(pages.texts),
        "page_count": pages.page_count,
        "truncated": len(pages.texts) < pages.page_count,
    }
    return header, ["\f".join(pages.texts).encode("utf-8")]


def _frame(header: dict[str, Any], parts: list[bytes]) -> bytes:
    return json.dumps({**header, "parts": [len(part) for part in parts]}).encode() + b"\n"


if __name__ == "__main__":
    main()
