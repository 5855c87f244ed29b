"""tus 1.0.0: the protocol's constants, headers and the problems it answers with.

https://tus.io/protocols/resumable-upload. No HTTP framework here: the router turns
headers into these values, services raise these problems.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime

from medvault.kit.i18n import N_, msg
from medvault.kit.problems import BadRequest, Conflict, Problem

TUS_VERSION = "1.0.0"
EXTENSIONS = (
    "creation",
    "creation-with-upload",
    "creation-defer-length",
    "termination",
    "expiration",
    "checksum",
)
CHECKSUM_ALGORITHMS = ("sha1", "sha256")
PATCH_MEDIA_TYPE = "application/offset+octet-stream"
# Upload-Metadata as the client sent it is kept (HEAD returns it); more than this is
# not a document's fields.
MAX_METADATA_CHARS = 4096

_METADATA_KEY = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token
_DIGITS = re.compile(r"^[0-9]{1,19}$")


class TusVersionUnsupported(Problem):
    status, slug, title = 412, "tus-version-unsupported", N_("This tus version is not supported")


class OffsetMismatch(Conflict):
    slug, title = "upload-offset-mismatch", N_("Upload-Offset is not where the upload stands")


class UploadLocked(Problem):
    status, slug, title = 423, "upload-busy", N_("Another request is appending to this upload")


class UploadGone(Problem):
    status, slug, title = 410, "upload-gone", N_("This upload has expired or was refused")


class ChecksumMismatch(Problem):
    status, slug, title = 460, "checksum-mismatch", N_("The checksum does not match the bytes")


class BadUploadHeader(BadRequest):
    slug, title = "invalid-upload-header", N_("A tus header is missing or invalid")


class WrongPatchType(Problem):
    status, slug, title = (
        415,
        "upload-patch-media-type",
        N_("PATCH bodies must be application/offset+octet-stream"),
    )


def check_version(header: str | None) -> None:
    if header != TUS_VERSION:
        raise TusVersionUnsupported(
            N_("Send Tus-Resumable: 1.0.0 with every request."),
            headers={"Tus-Version": TUS_VERSION},
        )


def parse_size(name: str, value: str | None) -> int | None:
    """A non-negative integer header (Upload-Length, Upload-Offset), or None if absent."""
    if value is None:
        return None
    if not _DIGITS.match(value.strip()):
        raise BadUploadHeader(msg("{name} must be a non-negative integer.", name=name))
    return int(value.strip())


def parse_metadata(header: str | None) -> dict[str, str]:
    """Upload-Metadata: comma-separated ``key base64(value)`` pairs; values are UTF-8."""
    if not header or not header.strip():
        return {}
    if len(header) > MAX_METADATA_CHARS:
        raise BadUploadHeader(
            msg("Upload-Metadata is at most {limit} characters.", limit=MAX_METADATA_CHARS)
        )
    fields: dict[str, str] = {}
    for pair in header.split(","):
        parts = pair.strip().split(" ")
        key = parts[0]
        if not _METADATA_KEY.match(key) or len(parts) > 2 or key in fields:
            raise BadUploadHeader(N_("Upload-Metadata holds a malformed or repeated key."))
        try:
            value = base64.b64decode(parts[1], validate=True) if len(parts) == 2 else b""
            fields[key] = value.decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise BadUploadHeader(
                msg("The Upload-Metadata value of {key} is not base64 of UTF-8 text.", key=key)
            ) from None
    return fields


@dataclass(frozen=True)
class Checksum:
    algorithm: str
    digest: bytes

    def hasher(self) -> hashlib._Hash:
        # SHA-1 only checks that bytes arrived intact, as the client asked: not security.
        return hashlib.new(self.algorithm, usedforsecurity=self.algorithm != "sha1")


def parse_checksum(header: str | None) -> Checksum | None:
    """Upload-Checksum: ``<algorithm> <base64 digest>``."""
    if header is None:
        return None
    parts = header.strip().split(" ")
    if len(parts) != 2 or parts[0] not in CHECKSUM_ALGORITHMS:
        raise BadUploadHeader(
            msg(
                "Upload-Checksum must be one of {algorithms} and a base64 digest.",
                algorithms=", ".join(CHECKSUM_ALGORITHMS),
            )
        )
    try:
        digest = base64.b64decode(parts[1], validate=True)
    except binascii.Error:
        raise BadUploadHeader(N_("The Upload-Checksum digest is not base64.")) from None
    if len(digest) != hashlib.new(parts[0]).digest_size:
        raise BadUploadHeader(N_("The Upload-Checksum digest has the wrong length."))
    return Checksum(parts[0], digest)


def http_date(moment: datetime) -> str:
    """RFC 9110 date, as Upload-Expires carries it."""
    return format_datetime(moment, usegmt=True)
