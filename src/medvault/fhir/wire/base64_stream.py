"""Decoding base64 payloads while they stream in."""

from __future__ import annotations

import binascii
from collections.abc import AsyncIterator

from medvault.fhir.wire.outcome import InvalidResource

# FHIR's base64Binary allows whitespace between groups (MIME-style line breaks).
_WHITESPACE = b" \t\r\n"


class InvalidBase64(InvalidResource):
    slug, title = "fhir-invalid-base64", "The base64 data is not valid"


async def base64_decoded(text: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The bytes of base64 ``text``, decoded group by group as the characters arrive.

    Only whole 4-character groups are decoded at a time, so memory holds one piece
    of the body, never the document. Padding may only end the data.
    """
    carry = b""
    padded = False
    async for piece in text:
        piece = piece.translate(None, _WHITESPACE)
        if not piece:
            continue
        if padded:
            raise InvalidBase64("The base64 data continues after its padding.")
        data = carry + piece if carry else piece
        usable = len(data) - len(data) % 4
        if usable:
            block = data[:usable]
            try:
                decoded = binascii.a2b_base64(block, strict_mode=True)
            except binascii.Error:
                raise InvalidBase64(
                    "The base64 data has characters outside the base64 alphabet or "
                    "misplaced padding."
                ) from None
            padded = block.endswith(b"=")
            if decoded:
                yield decoded
        carry = data[usable:]
    if carry:
        raise InvalidBase64("The base64 data is cut short (its length is not a multiple of 4).")
