"""The segmented envelope: round trips, random access, and every kind of tampering."""

from __future__ import annotations

import itertools
import os
import uuid

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from medvault.crypto.envelope import (
    MAX_HEADER_BYTES,
    TAG_BYTES,
    EnvelopeHeader,
    EnvelopeReader,
    EnvelopeWriter,
    ciphertext_size,
)
from medvault.crypto.errors import IntegrityError
from medvault.crypto.keyring import new_dek

SEGMENT = 64


def seal(plaintext: bytes, *, version_id: uuid.UUID, dek: bytes, pieces: int = 3) -> bytes:
    writer = EnvelopeWriter(
        dek=dek,
        kek_id="kek-test",
        wrapped_dek=b"w" * 60,
        version_id=version_id,
        segment_size=SEGMENT,
    )
    out = [writer.header_bytes()]
    step = max(1, len(plaintext) // pieces)
    for start in range(0, len(plaintext), step):
        out.append(bytes(writer.update_view(plaintext[start : start + step])))
    out.append(writer.finalize())
    return b"".join(out)


def open_all(blob: bytes, *, dek: bytes, size: int, chunk: int = 50) -> bytes:
    header = EnvelopeHeader.parse(blob[:MAX_HEADER_BYTES])
    reader = EnvelopeReader(dek=dek, header=header, plaintext_size=size)
    span = reader.span(0, max(0, size - 1))
    body = blob[span.ciphertext_offset :]
    return b"".join(
        reader.decrypt_span(span, [body[i : i + chunk] for i in range(0, len(body), chunk)])
    )


@given(
    data=st.binary(min_size=1, max_size=700), pieces=st.integers(1, 9), chunk=st.integers(1, 300)
)
@settings(max_examples=150, deadline=None)
def test_round_trip_any_size_and_chunking(data: bytes, pieces: int, chunk: int) -> None:
    vid, dek = uuid.uuid4(), new_dek()
    blob = seal(data, version_id=vid, dek=dek, pieces=pieces)
    header = EnvelopeHeader.parse(blob[:MAX_HEADER_BYTES])
    assert len(blob) == ciphertext_size(
        header_size=header.size, segment_size=SEGMENT, plaintext_size=len(data)
    )
    assert open_all(blob, dek=dek, size=len(data), chunk=chunk) == data


@given(
    data=st.binary(min_size=1, max_size=600),
    bounds=st.tuples(st.integers(0, 599), st.integers(0, 599)),
)
@settings(max_examples=150, deadline=None)
def test_any_range_decrypts_only_covering_segments(data: bytes, bounds: tuple[int, int]) -> None:
    first, last = sorted(b % len(data) for b in bounds)
    vid, dek = uuid.uuid4(), new_dek()
    blob = seal(data, version_id=vid, dek=dek)
    header = EnvelopeHeader.parse(blob[:MAX_HEADER_BYTES])
    reader = EnvelopeReader(dek=dek, header=header, plaintext_size=len(data))
    span = reader.span(first, last)
    assert span.first_segment == first // SEGMENT and span.last_segment == last // SEGMENT
    window = blob[span.ciphertext_offset : span.ciphertext_offset + span.ciphertext_length]
    assert len(window) == span.ciphertext_length
    assert b"".join(reader.decrypt_span(span, [window])) == data[first : last + 1]


def test_exact_multiple_of_segment_size_has_no_empty_trailer() -> None:
    data = os.urandom(SEGMENT * 3)
    vid, dek = uuid.uuid4(), new_dek()
    blob = seal(data, version_id=vid, dek=dek)
    header = EnvelopeHeader.parse(blob)
    assert len(blob) == header.size + 3 * (SEGMENT + TAG_BYTES)
    assert open_all(blob, dek=dek, size=len(data)) == data


@pytest.fixture
def sealed() -> tuple[bytes, bytes, uuid.UUID, bytes]:
    data = os.urandom(SEGMENT * 4 + 10)
    vid, dek = uuid.uuid4(), new_dek()
    return data, dek, vid, seal(data, version_id=vid, dek=dek)


def test_flipped_byte_in_any_segment_fails(sealed: tuple[bytes, bytes, uuid.UUID, bytes]) -> None:
    data, dek, _, blob = sealed
    header_size = EnvelopeHeader.parse(blob).size
    for position in range(header_size, len(blob), 37):
        damaged = bytearray(blob)
        damaged[position] ^= 0x01
        with pytest.raises(IntegrityError):
            open_all(bytes(damaged), dek=dek, size=len(data))


def test_truncation_at_a_segment_boundary_fails(
    sealed: tuple[bytes, bytes, uuid.UUID, bytes],
) -> None:
    data, dek, _, blob = sealed
    header_size = EnvelopeHeader.parse(blob).size
    cut = blob[: header_size + 2 * (SEGMENT + TAG_BYTES)]
    with pytest.raises(IntegrityError):
        open_all(cut, dek=dek, size=len(data))
    # Even a reader told the shorter size refuses: segment 1 was not sealed as the last one.
    with pytest.raises(IntegrityError):
        open_all(cut, dek=dek, size=2 * SEGMENT)


def test_reordered_segments_fail(sealed: tuple[bytes, bytes, uuid.UUID, bytes]) -> None:
    data, dek, _, blob = sealed
    h = EnvelopeHeader.parse(blob).size
    stride = SEGMENT + TAG_BYTES
    segments = [blob[h + i * stride : h + (i + 1) * stride] for i in range(4)]
    swapped = blob[:h] + segments[1] + segments[0] + b"".join(segments[2:]) + blob[h + 4 * stride :]
    with pytest.raises(IntegrityError):
        open_all(swapped, dek=dek, size=len(data))


def test_blob_of_another_version_fails_even_with_the_same_key() -> None:
    data, dek = os.urandom(100), new_dek()
    blob = seal(data, version_id=uuid.uuid4(), dek=dek)
    header = EnvelopeHeader.parse(blob)
    forged = EnvelopeHeader(
        header.kek_id, header.wrapped_dek, header.nonce_prefix, header.segment_size, uuid.uuid4()
    )
    reader = EnvelopeReader(dek=dek, header=forged, plaintext_size=len(data))
    span = reader.span(0, len(data) - 1)
    with pytest.raises(IntegrityError):
        b"".join(reader.decrypt_span(span, [blob[span.ciphertext_offset :]]))


def test_malformed_headers_are_integrity_errors() -> None:
    blob = seal(b"%PDF-", version_id=uuid.uuid4(), dek=new_dek())
    for broken in (b"", b"XXXX" + blob[4:], blob[:10], blob[:4] + b"\x09" + blob[5:]):
        with pytest.raises(IntegrityError):
            EnvelopeHeader.parse(broken)


def test_ciphertext_never_contains_the_plaintext() -> None:
    marker = b"SYNTHETIC-PATIENT-MARKER" * 20
    blob = seal(marker, version_id=uuid.uuid4(), dek=new_dek())
    assert b"SYNTHETIC-PATIENT" not in blob


def reference_seal(plaintext: bytes, *, version_id: uuid.UUID, dek: bytes, prefix: bytes) -> bytes:
    """The format spelled out segment by segment, independent of the writer's buffering."""
    aead = AESGCM(dek)
    count = max(1, -(-len(plaintext) // SEGMENT))
    sealed = []
    for index in range(count):
        last = b"\x01" if index == count - 1 else b"\x00"
        nonce = prefix + index.to_bytes(4, "big") + last
        piece = plaintext[index * SEGMENT : (index + 1) * SEGMENT]
        sealed.append(aead.encrypt(nonce, piece, version_id.bytes))
    return b"".join(sealed)


@given(
    data=st.binary(min_size=1, max_size=900),
    cuts=st.lists(st.integers(0, 900), max_size=12),
)
@settings(max_examples=200, deadline=None)
def test_update_view_matches_the_format_for_any_chunking(data: bytes, cuts: list[int]) -> None:
    """Chunks of any size, including exact segment multiples and a held-back tail that is
    exactly one segment, give the same ciphertext as sealing segment by segment; the
    caller's buffer is refilled after every call, as ``pump`` does."""
    vid, dek, prefix = uuid.uuid4(), new_dek(), b"\x07" * 7
    writer = EnvelopeWriter(
        dek=dek,
        kek_id="kek-test",
        wrapped_dek=b"w",
        version_id=vid,
        segment_size=SEGMENT,
        nonce_prefix=prefix,
    )
    reused = bytearray(len(data))
    out = []
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    for start, end in itertools.pairwise(bounds):
        reused[: end - start] = data[start:end]
        out.append(bytes(writer.update_view(memoryview(reused)[: end - start])))
        reused[:] = b"\xff" * len(reused)  # a writer that kept a reference would now see this
    out.append(writer.finalize())
    assert b"".join(out) == reference_seal(data, version_id=vid, dek=dek, prefix=prefix)


def test_update_view_reuses_one_output_buffer() -> None:
    """The point of update_view: batch after batch lands in the same memory."""
    writer = EnvelopeWriter(
        dek=new_dek(), kek_id="k", wrapped_dek=b"w", version_id=uuid.uuid4(), segment_size=SEGMENT
    )
    batch = os.urandom(SEGMENT * 8)
    first = writer.update_view(batch)
    # The first call holds one segment back, since it could be the last.
    assert len(first) == 7 * (SEGMENT + TAG_BYTES)
    first.release()
    owners = []  # kept alive, so a replaced buffer cannot come back at the same id
    for _ in range(4):
        view = writer.update_view(batch)
        assert len(view) == 8 * (SEGMENT + TAG_BYTES)
        owners.append(view.obj)
        view.release()
    assert all(owner is owners[0] for owner in owners)
