"""A read-only, seekable file over one encrypted version, decrypted segment by segment.

PDF parsers (pikepdf, pypdfium2) need random access: the cross-reference table sits at
the end of the file. Handing them this object lets them parse a document of any size
without its plaintext ever being written to disk or held whole in memory: each read
fetches and authenticates only the segments it touches, and a small cache keeps the
most recently used segments so that a parser's back-and-forth costs few store reads.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from typing import TYPE_CHECKING

from medvault.crypto.envelope import EnvelopeReader
from medvault.documents.content import Sealed, open_reader

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

    from medvault.runtime import Runtime

# Decrypted segments kept per open file. Segments are 64 KiB by default (up to 16 MiB):
# the cache holds at least two, and otherwise stays within this many bytes.
CACHE_BYTES = 4 * 1024 * 1024


class PlaintextFile(io.RawIOBase):
    def __init__(self, runtime: Runtime, version: Sealed) -> None:
        self._runtime = runtime
        self._key = version.storage_key
        self._reader: EnvelopeReader = open_reader(runtime, version)
        self._size = version.size
        self._position = 0
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._capacity = max(2, CACHE_BYTES // self._reader.header.segment_size)

    @property
    def size(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._position + offset
        elif whence == io.SEEK_END:
            target = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if target < 0:
            raise ValueError("negative seek position")
        self._position = target
        return target

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), self._size - self._position)
        if wanted <= 0:
            return 0
        filled = 0
        segment_size = self._reader.header.segment_size
        while filled < wanted:
            index, skip = divmod(self._position, segment_size)
            plaintext = self._segment(index)
            piece = plaintext[skip : skip + (wanted - filled)]
            view[filled : filled + len(piece)] = piece
            filled += len(piece)
            self._position += len(piece)
        return filled

    def _segment(self, index: int) -> bytes:
        cached = self._cache.get(index)
        if cached is not None:
            self._cache.move_to_end(index)
            return cached
        segment_size = self._reader.header.segment_size
        first = index * segment_size
        last = min(first + segment_size, self._size) - 1
        span = self._reader.span(first, last)
        ciphertext = self._runtime.blobs.read(
            self._key, offset=span.ciphertext_offset, length=span.ciphertext_length
        )
        plaintext = b"".join(self._reader.decrypt_span(span, ciphertext))
        self._cache[index] = plaintext
        if len(self._cache) > self._capacity:
            self._cache.popitem(last=False)
        return plaintext
