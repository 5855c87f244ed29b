"""The published envelope test vectors (docs/encryption-format.md) against the real code.

The vectors in ``vectors/envelope-v1.json`` were generated once with the fixed inputs
they list. These tests prove three things:

* the code still produces exactly those bytes (the format has not drifted);
* the code decrypts them, and rejects any tampered segment;
* the document alone is enough: ``decrypt_from_spec`` reads the blob with nothing but
  ``cryptography``'s AESGCM and the layout described in the docs, no medvault import.
"""

from __future__ import annotations

import json
import struct
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from medvault.crypto.envelope import EnvelopeHeader, EnvelopeReader, EnvelopeWriter
from medvault.crypto.errors import IntegrityError
from medvault.crypto.keyring import Kek, Keyring, WrappedDek

VECTORS_FILE = Path(__file__).parent / "vectors" / "envelope-v1.json"
VECTORS: list[dict[str, Any]] = json.loads(VECTORS_FILE.read_text())["vectors"]


def _ids(vector: dict[str, Any]) -> str:
    return str(vector["name"])


def _b(vector: dict[str, Any], field: str) -> bytes:
    return bytes.fromhex(vector[field])


def _segments_start(vector: dict[str, Any]) -> int:
    return len(_b(vector, "header"))


def _encrypt(vector: dict[str, Any], *, chunk: int | None = None) -> bytes:
    plaintext = _b(vector, "plaintext")
    writer = EnvelopeWriter(
        dek=_b(vector, "dek"),
        kek_id=vector["kek_id"],
        wrapped_dek=_b(vector, "wrapped_dek"),
        version_id=uuid.UUID(vector["version_id"]),
        segment_size=vector["segment_size"],
        nonce_prefix=_b(vector, "nonce_prefix"),
    )
    out = [writer.header_bytes()]
    step = chunk or len(plaintext)
    for start in range(0, len(plaintext), step):
        out.append(bytes(writer.update_view(plaintext[start : start + step])))
    out.append(writer.finalize())
    return b"".join(out)


def _decrypt_with_medvault(vector: dict[str, Any], blob: bytes) -> bytes:
    header = EnvelopeHeader.parse(blob)
    reader = EnvelopeReader(
        dek=_b(vector, "dek"), header=header, plaintext_size=len(_b(vector, "plaintext"))
    )
    span = reader.span(0, reader.plaintext_size - 1)
    return b"".join(reader.decrypt_span(span, [blob[span.ciphertext_offset :]]))


def decrypt_from_spec(blob: bytes, kek: bytes) -> bytes:
    """Decrypt a blob using only docs/encryption-format.md and AESGCM (no medvault code).

    Only the blob and the KEK are used: the plaintext size comes from the blob length.
    """
    assert blob[0:4] == b"MVB\x01"
    assert blob[4] == 1  # format version
    kek_id_len = blob[5]
    pos = 6 + kek_id_len
    (wrapped_len,) = struct.unpack(">H", blob[pos : pos + 2])
    pos += 2
    wrapped = blob[pos : pos + wrapped_len]
    pos += wrapped_len
    nonce_prefix = blob[pos : pos + 7]
    pos += 7
    (segment_size,) = struct.unpack(">I", blob[pos : pos + 4])
    pos += 4
    version_id = blob[pos : pos + 16]
    pos += 16

    # Wrapped DEK: 12-byte nonce, then AES-256-GCM(KEK) of the DEK with its 16-byte tag.
    dek = AESGCM(kek).decrypt(wrapped[:12], wrapped[12:], b"medvault/dek/v1|" + version_id)

    # Every segment carries a 16-byte tag; only the last may be short.
    ciphertext_total = len(blob) - pos
    segments = -(-ciphertext_total // (segment_size + 16))
    plaintext_size = ciphertext_total - 16 * segments

    aead = AESGCM(dek)
    plaintext = bytearray()
    for index in range(segments):
        last = index == segments - 1
        size = plaintext_size - index * segment_size if last else segment_size
        ciphertext = blob[pos : pos + size + 16]
        pos += size + 16
        nonce = nonce_prefix + index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")
        plaintext += aead.decrypt(nonce, ciphertext, version_id)
    assert pos == len(blob), "bytes left over after the last segment"
    return bytes(plaintext)


@pytest.mark.parametrize("vector", VECTORS, ids=_ids)
def test_encrypting_fixed_inputs_gives_the_published_bytes(vector: dict[str, Any]) -> None:
    assert _encrypt(vector).hex() == vector["blob"]


@pytest.mark.parametrize("vector", VECTORS, ids=_ids)
@pytest.mark.parametrize("chunk", [1, 5, 16, 17])
def test_output_does_not_depend_on_how_the_plaintext_is_fed(
    vector: dict[str, Any], chunk: int
) -> None:
    assert _encrypt(vector, chunk=chunk).hex() == vector["blob"]


@pytest.mark.parametrize("vector", VECTORS, ids=_ids)
def test_header_fields_match_the_inputs(vector: dict[str, Any]) -> None:
    blob = _b(vector, "blob")
    header = EnvelopeHeader.parse(blob)
    assert header.encode() == _b(vector, "header")
    assert header.size == len(_b(vector, "header"))
    assert header.kek_id == vector["kek_id"]
    assert header.wrapped_dek == _b(vector, "wrapped_dek")
    assert header.nonce_prefix == _b(vector, "nonce_prefix")
    assert header.segment_size == vector["segment_size"]
    assert header.version_id == uuid.UUID(vector["version_id"])


@pytest.mark.parametrize("vector", VECTORS, ids=_ids)
def test_keyring_unwraps_the_published_wrapped_dek(vector: dict[str, Any]) -> None:
    kek = Kek(id=vector["kek_id"], key=_b(vector, "kek"), created_at=datetime.now(UTC))
    keyring = Keyring([kek], kek.id)
    wrapped = WrappedDek(vector["kek_id"], _b(vector, "wrapped_dek"))
    version_id = uuid.UUID(vector["version_id"])
    assert keyring.unwrap_dek(wrapped, version_id=version_id) == _b(vector, "dek")
    with pytest.raises(IntegrityError):
        keyring.unwrap_dek(wrapped, version_id=uuid.uuid4())


@pytest.mark.parametrize("vector", VECTORS, ids=_ids)
def test_medvault_decrypts_the_vector(vector: dict[str, Any]) -> None:
    assert _decrypt_with_medvault(vector, _b(vector, "blob")) == _b(vector, "plaintext")


@pytest.mark.parametrize("vector", VECTORS, ids=_ids)
def test_the_document_alone_is_enough_to_decrypt(vector: dict[str, Any]) -> None:
    plaintext = decrypt_from_spec(_b(vector, "blob"), _b(vector, "kek"))
    assert plaintext == _b(vector, "plaintext")


@pytest.mark.parametrize("vector", VECTORS, ids=_ids)
def test_flipping_any_segment_byte_fails_authentication(vector: dict[str, Any]) -> None:
    blob = _b(vector, "blob")
    for position in range(_segments_start(vector), len(blob)):
        tampered = bytearray(blob)
        tampered[position] ^= 0x01
        with pytest.raises(IntegrityError):
            _decrypt_with_medvault(vector, bytes(tampered))


@pytest.mark.parametrize("vector", VECTORS, ids=_ids)
def test_truncated_or_reordered_segments_fail(vector: dict[str, Any]) -> None:
    blob = _b(vector, "blob")
    start = _segments_start(vector)
    stride = vector["segment_size"] + 16
    with pytest.raises(IntegrityError):
        _decrypt_with_medvault(vector, blob[:-1])
    first, second = blob[start : start + stride], blob[start + stride : start + 2 * stride]
    swapped = blob[:start] + second + first + blob[start + 2 * stride :]
    with pytest.raises(IntegrityError):
        _decrypt_with_medvault(vector, swapped)


def test_dropping_the_final_segment_fails_even_at_a_segment_boundary() -> None:
    """The last-segment flag: a blob cut after a full segment does not pass as shorter."""
    vector = next(v for v in VECTORS if v["name"] == "exact-multiple")
    blob = _b(vector, "blob")
    stride = vector["segment_size"] + 16
    header = EnvelopeHeader.parse(blob)
    reader = EnvelopeReader(dek=_b(vector, "dek"), header=header, plaintext_size=16)
    span = reader.span(0, 15)
    with pytest.raises(IntegrityError):
        b"".join(reader.decrypt_span(span, [blob[span.ciphertext_offset :][:stride]]))


def test_a_range_reads_only_the_segments_that_cover_it() -> None:
    """The worked range example in the docs: plaintext bytes 20..33 of the 3-segment vector."""
    vector = next(v for v in VECTORS if v["name"] == "three-segments")
    blob = _b(vector, "blob")
    header = EnvelopeHeader.parse(blob)
    plaintext = _b(vector, "plaintext")
    reader = EnvelopeReader(dek=_b(vector, "dek"), header=header, plaintext_size=len(plaintext))
    span = reader.span(20, 33)
    assert (span.first_segment, span.last_segment) == (1, 2)
    assert (span.ciphertext_offset, span.ciphertext_length) == (140, 52)
    assert (span.skip_head, span.plaintext_length) == (4, 14)
    ciphertext = blob[span.ciphertext_offset : span.ciphertext_offset + span.ciphertext_length]
    assert b"".join(reader.decrypt_span(span, [ciphertext])) == plaintext[20:34]
