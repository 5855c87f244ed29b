"""The segmented envelope format that every stored blob uses (format version 1).

A blob is a header followed by AES-256-GCM segments (the STREAM construction):

* every segment but the last encrypts exactly ``segment_size`` plaintext bytes; the
  last encrypts the remainder (0..segment_size bytes; an empty file is one empty
  final segment);
* the nonce of segment ``i`` is ``nonce_prefix (7) || i as u32 big-endian (4) ||
  last-flag (1)``, so reordering, truncating at a segment boundary or appending
  fails authentication;
* the associated data is the 16-byte version id, so a blob moved under another
  version fails too.

Fixed-size segments give random access: a byte range maps to a run of segments
without decrypting anything before it. See ``docs/encryption-format.md``.
"""

from __future__ import annotations

import secrets
import struct
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from medvault.crypto.errors import IntegrityError

MAGIC = b"MVB\x01"
FORMAT_VERSION = 1
NONCE_PREFIX_BYTES = 7
TAG_BYTES = 16
MAX_HEADER_BYTES = 4 + 1 + 1 + 255 + 2 + 1024 + NONCE_PREFIX_BYTES + 4 + 16
# The header's KEK id when the header carries no wrap of the data key (empty wrapped
# DEK): the key lives only in the database row. Every blob is written so, so that
# deleting the row's wrap (records destruction) leaves no copy of the blob anywhere
# that the keyring alone can open. Blobs from before carry a real KEK id and wrap.
DETACHED_KEK_ID = "detached"


@dataclass(frozen=True)
class EnvelopeHeader:
    kek_id: str
    wrapped_dek: bytes
    nonce_prefix: bytes
    segment_size: int
    version_id: uuid.UUID

    def encode(self) -> bytes:
        kek_id = self.kek_id.encode("ascii")
        if not 0 < len(kek_id) < 256 or len(self.wrapped_dek) > 1024:
            raise ValueError("KEK id or wrapped DEK too long for the header")
        if len(self.nonce_prefix) != NONCE_PREFIX_BYTES:
            raise ValueError("nonce prefix must be 7 bytes")
        return b"".join(
            (
                MAGIC,
                struct.pack(">BB", FORMAT_VERSION, len(kek_id)),
                kek_id,
                struct.pack(">H", len(self.wrapped_dek)),
                self.wrapped_dek,
                self.nonce_prefix,
                struct.pack(">I", self.segment_size),
                self.version_id.bytes,
            )
        )

    @property
    def size(self) -> int:
        return 4 + 2 + len(self.kek_id) + 2 + len(self.wrapped_dek) + NONCE_PREFIX_BYTES + 4 + 16

    @classmethod
    def parse(cls, data: bytes) -> EnvelopeHeader:
        """Parse a header from the first bytes of a blob (trailing bytes are ignored)."""
        try:
            if data[:4] != MAGIC:
                raise IntegrityError("blob does not start with the envelope magic")
            version, kek_len = struct.unpack_from(">BB", data, 4)
            if version != FORMAT_VERSION:
                raise IntegrityError(f"unknown envelope format version {version}")
            pos = 6
            kek_id = data[pos : pos + kek_len].decode("ascii")
            pos += kek_len
            (wrapped_len,) = struct.unpack_from(">H", data, pos)
            pos += 2
            wrapped = data[pos : pos + wrapped_len]
            pos += wrapped_len
            nonce_prefix = data[pos : pos + NONCE_PREFIX_BYTES]
            pos += NONCE_PREFIX_BYTES
            (segment_size,) = struct.unpack_from(">I", data, pos)
            pos += 4
            version_id = uuid.UUID(bytes=data[pos : pos + 16])
        except (struct.error, UnicodeDecodeError, ValueError) as exc:
            raise IntegrityError(f"blob header is truncated or malformed: {exc}") from None
        if len(wrapped) != wrapped_len or len(nonce_prefix) != NONCE_PREFIX_BYTES:
            raise IntegrityError("blob header is truncated")
        if segment_size == 0:
            raise IntegrityError("blob header has a zero segment size")
        return cls(kek_id, wrapped, nonce_prefix, segment_size, version_id)


def segment_count(*, segment_size: int, plaintext_size: int) -> int:
    return max(1, -(-plaintext_size // segment_size))


def ciphertext_size(*, header_size: int, segment_size: int, plaintext_size: int) -> int:
    segments = segment_count(segment_size=segment_size, plaintext_size=plaintext_size)
    return header_size + plaintext_size + segments * TAG_BYTES


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + struct.pack(">I", index) + (b"\x01" if last else b"\x00")


class EnvelopeWriter:
    """Turns a plaintext stream into ciphertext, one whole segment at a time.

    The final segment is held back until :meth:`finalize`, because only then is it
    known to be the last one (its nonce carries the last-segment flag).
    """

    def __init__(
        self,
        *,
        dek: bytes,
        version_id: uuid.UUID,
        segment_size: int,
        kek_id: str = DETACHED_KEK_ID,
        wrapped_dek: bytes = b"",
        nonce_prefix: bytes | None = None,
    ) -> None:
        self.header = EnvelopeHeader(
            kek_id=kek_id,
            wrapped_dek=wrapped_dek,
            nonce_prefix=nonce_prefix or secrets.token_bytes(NONCE_PREFIX_BYTES),
            segment_size=segment_size,
            version_id=version_id,
        )
        self._aead = AESGCM(dek)
        self._aad = version_id.bytes
        self._pending = bytearray()
        self._out = bytearray()
        self._index = 0
        self._finalized = False

    def header_bytes(self) -> bytes:
        return self.header.encode()

    def _nonce(self, last: bool) -> bytes:
        nonce = _nonce(self.header.nonce_prefix, self._index, last)
        self._index += 1
        return nonce

    def update_view(self, plaintext: bytes | bytearray | memoryview) -> memoryview:
        """Ciphertext for every segment that is now complete and known not to be last.

        It is a view of a buffer this writer reuses, valid only until the next call:
        hand it to something that consumes it at once (a blob writer), or copy it. Why:
        a 1 GiB upload that got fresh bytes per call made a new ~1 MiB ciphertext
        buffer per batch (plus a copy of every segment), and glibc hands buffers that
        size straight back to the kernel, so every page of every batch faulted in
        again: ~250k minor faults per GiB uploaded, and 0.7 s more system time on the
        thread doing the work than a bare write loop. With this (and ``pump``'s reused
        batches) an upload faults ~3,400 times per GiB.
        Segments are sealed with ``encrypt_into`` straight from the caller's buffer into
        this one; only the held-back tail (at most one segment) is copied.
        """
        if self._finalized:
            raise RuntimeError("envelope already finalized")
        data = memoryview(plaintext).cast("B")
        size = self.header.segment_size
        total = len(self._pending) + len(data)
        if total <= size:
            self._pending += data
            return memoryview(b"")
        # Keep at least one byte pending: a full segment could still be the last one.
        whole = (total - 1) // size
        stride = size + TAG_BYTES
        if len(self._out) < whole * stride:
            # Replaced, never resized: a view handed out earlier may still be alive,
            # and a bytearray with live views cannot change size.
            self._out = bytearray(whole * stride)
        out = memoryview(self._out)
        used = first = 0
        if self._pending:
            # The held-back tail is completed from the new data and sealed first.
            used, first = size - len(self._pending), 1
            self._pending += data[:used]
            self._aead.encrypt_into(self._nonce(False), self._pending, self._aad, out[:stride])
            self._pending.clear()
        for i in range(first, whole):
            segment = data[used : used + size]
            used += size
            self._aead.encrypt_into(
                self._nonce(False), segment, self._aad, out[i * stride : (i + 1) * stride]
            )
        self._pending += data[used:]
        return out[: whole * stride]

    def finalize(self) -> bytes:
        if self._finalized:
            raise RuntimeError("envelope already finalized")
        self._finalized = True
        last = self._aead.encrypt(self._nonce(True), self._pending, self._aad)
        self._pending = bytearray()
        return last


@dataclass(frozen=True)
class SegmentSpan:
    """Which segments cover a plaintext range, and where they sit in the blob."""

    first_segment: int
    last_segment: int
    ciphertext_offset: int
    ciphertext_length: int
    skip_head: int
    plaintext_length: int


class EnvelopeReader:
    """Decrypts whole segments and checks each one before any byte is released."""

    def __init__(self, *, dek: bytes, header: EnvelopeHeader, plaintext_size: int) -> None:
        self.header = header
        self.plaintext_size = plaintext_size
        self.segments = segment_count(
            segment_size=header.segment_size, plaintext_size=plaintext_size
        )
        self._aead = AESGCM(dek)
        self._aad = header.version_id.bytes

    def _segment_plaintext_len(self, index: int) -> int:
        if index < self.segments - 1:
            return self.header.segment_size
        return self.plaintext_size - (self.segments - 1) * self.header.segment_size

    def span(self, first_byte: int, last_byte: int) -> SegmentSpan:
        """Segments covering plaintext bytes ``first_byte..last_byte`` inclusive."""
        size = self.header.segment_size
        if self.plaintext_size == 0:
            first_seg = last_seg = 0
            length = 0
        else:
            if not 0 <= first_byte <= last_byte < self.plaintext_size:
                raise ValueError("range outside the plaintext")
            first_seg, last_seg = first_byte // size, last_byte // size
            length = last_byte - first_byte + 1
        # Only the blob's final segment can be short, and it can only be the span's last.
        stride = size + TAG_BYTES
        ct_len = (last_seg - first_seg) * stride + self._segment_plaintext_len(last_seg) + TAG_BYTES
        return SegmentSpan(
            first_segment=first_seg,
            last_segment=last_seg,
            ciphertext_offset=self.header.size + first_seg * stride,
            ciphertext_length=ct_len,
            skip_head=first_byte - first_seg * size if self.plaintext_size else 0,
            plaintext_length=length,
        )

    def decrypt_segment(self, index: int, ciphertext: bytes) -> bytes:
        last = index == self.segments - 1
        if len(ciphertext) != self._segment_plaintext_len(index) + TAG_BYTES:
            raise IntegrityError(f"segment {index} has the wrong length")
        try:
            return self._aead.decrypt(
                _nonce(self.header.nonce_prefix, index, last), ciphertext, self._aad
            )
        except InvalidTag:
            raise IntegrityError(f"segment {index} failed authentication") from None

    def decrypt_span(self, span: SegmentSpan, ciphertext: Iterable[bytes]) -> Iterator[bytes]:
        """Plaintext of ``span``, given its ciphertext in chunks of any size.

        Raises :class:`IntegrityError` on the first segment that does not authenticate
        or when the ciphertext ends early; bytes of that segment are never yielded.
        """
        buffer = bytearray()
        index = span.first_segment
        skip = span.skip_head
        remaining = span.plaintext_length
        chunks = iter(ciphertext)
        exhausted = False
        while index <= span.last_segment:
            need = self._segment_plaintext_len(index) + TAG_BYTES
            while len(buffer) < need and not exhausted:
                try:
                    buffer += next(chunks)
                except StopIteration:
                    exhausted = True
            if len(buffer) < need:
                raise IntegrityError(f"blob ends inside segment {index}")
            plaintext = self.decrypt_segment(index, bytes(buffer[:need]))
            del buffer[:need]
            piece = plaintext[skip : skip + remaining]
            skip = 0
            remaining -= len(piece)
            index += 1
            if piece:
                yield piece
        if remaining:
            raise IntegrityError("blob ended before the requested range")
