"""``pump``: chunks of any size become batches in two reused buffers, and nothing is lost.

The buffers are refilled while the previous batch is still being hashed, encrypted and
written on a worker thread; a feed that kept a reference to its batch, or a batch handed
over before the previous one finished, would corrupt the stored bytes or the hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator

import pytest

from medvault.documents.content import iter_plaintext
from medvault.documents.ingest import BATCH_BYTES, IngestPipeline, pump
from medvault.kit.problems import PayloadTooLarge
from medvault.runtime import Runtime

PDF_HEAD = b"%PDF-1.7\n"


async def chunked(data: bytes, sizes: list[int]) -> AsyncIterator[bytes]:
    pos, turn = 0, 0
    while pos < len(data):
        size = sizes[turn % len(sizes)]
        turn += 1
        yield data[pos : pos + size]
        pos += size
        if turn % 3 == 0:
            yield b""  # empty chunks happen (ASGI's last message) and are skipped
            await asyncio.sleep(0)


@pytest.mark.parametrize(
    "sizes",
    [
        [1, 7, BATCH_BYTES - 3],  # odd sizes straddling every batch boundary
        [BATCH_BYTES],  # exactly one batch per chunk
        [3 * BATCH_BYTES + 5],  # one chunk fills several batches
        [65_536],  # what the HTTP server delivers
    ],
)
def test_any_chunking_stores_exactly_the_bytes_sent(runtime: Runtime, sizes: list[int]) -> None:
    data = PDF_HEAD + os.urandom(4 * BATCH_BYTES + 12_345)
    pipeline = IngestPipeline(runtime=runtime)
    asyncio.run(pump(chunked(data, sizes), pipeline))
    result = pipeline.finish()
    try:
        assert result.size == len(data)
        assert result.sha256 == hashlib.sha256(data).hexdigest()
        back = b"".join(iter_plaintext(runtime, result, 0, len(data) - 1, verify_hash=True))
        assert back == data
    finally:
        runtime.blobs.delete(result.storage_key)


def test_an_oversized_stream_stops_at_the_chunk_that_crosses_the_limit(runtime: Runtime) -> None:
    pipeline = IngestPipeline(runtime=runtime)
    pipeline.max_bytes = 2 * BATCH_BYTES + 10
    seen = 0

    async def stream() -> AsyncIterator[bytes]:
        nonlocal seen
        yield PDF_HEAD
        for _ in range(10):
            seen += 1
            yield os.urandom(BATCH_BYTES // 2)

    with pytest.raises(PayloadTooLarge):
        asyncio.run(pump(stream(), pipeline))
    pipeline.discard()
    # 2 MiB + 10 is crossed by the fifth half-batch; nothing after it is read.
    assert seen == 5
