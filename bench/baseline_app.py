"""The upload baseline: the least work a Python ASGI server can do to store a body.

Starlette endpoints stream the request body to a file while hashing it with SHA-256,
then fsync the file (the vault fsyncs every blob, so the baseline pays for the same
durability). No auth, no database, no encryption, no multipart parsing. It is served
by uvicorn with the same options ``medvault serve`` uses, so the ratio vault /
baseline isolates what the vault itself costs.

Three ways to do that work, all measured; the fastest one is the reference:

* ``POST /upload``: the obvious code, hash and write each received chunk on the
  event loop;
* ``POST /upload-batched``: gather ~1 MiB, then hash and write it in a worker thread;
* ``POST /upload-pipelined``: as batched, but the next batch is received while the
  previous one is written, and each batch is hashed on a second thread while it is
  written (the structure of the vault's ingest pipeline).

``GET /files/{name}`` streams a stored file back, as a download reference point.

Run: ``python bench/baseline_app.py --port 8123 --dir /tmp/somewhere``
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

READ_CHUNK = 1024 * 1024
BATCH_BYTES = 1024 * 1024


def build_app(storage: Path) -> Starlette:
    storage.mkdir(parents=True, exist_ok=True)
    hashers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="baseline-sha256")

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    async def upload(request: Request) -> Response:
        name = secrets.token_hex(16)
        path = storage / name
        digest = hashlib.sha256()
        size = 0
        started = time.perf_counter()
        with path.open("wb", buffering=0) as out:
            async for chunk in request.stream():
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
            received = time.perf_counter()
            os.fsync(out.fileno())
        synced = time.perf_counter()
        return JSONResponse(
            {
                "name": name,
                "size": size,
                "sha256": digest.hexdigest(),
                "receive_s": round(received - started, 4),
                "fsync_s": round(synced - received, 4),
            },
            status_code=201,
        )

    async def upload_batched(request: Request) -> Response:
        name = secrets.token_hex(16)
        path = storage / name
        digest = hashlib.sha256()
        size = 0
        started = time.perf_counter()

        def consume(out: BinaryIO, data: bytes) -> None:
            digest.update(data)
            out.write(data)

        with path.open("wb", buffering=0) as out:
            batch: list[bytes] = []
            pending = 0
            async for chunk in request.stream():
                batch.append(chunk)
                pending += len(chunk)
                if pending >= BATCH_BYTES:
                    await run_in_threadpool(consume, out, b"".join(batch))
                    size += pending
                    batch, pending = [], 0
            if batch:
                await run_in_threadpool(consume, out, b"".join(batch))
                size += pending
            received = time.perf_counter()
            await run_in_threadpool(os.fsync, out.fileno())
        synced = time.perf_counter()
        return JSONResponse(
            {
                "name": name,
                "size": size,
                "sha256": digest.hexdigest(),
                "receive_s": round(received - started, 4),
                "fsync_s": round(synced - received, 4),
            },
            status_code=201,
        )

    async def upload_pipelined(request: Request) -> Response:
        name = secrets.token_hex(16)
        path = storage / name
        digest = hashlib.sha256()
        size = 0
        started = time.perf_counter()

        def consume(out: BinaryIO, data: bytes) -> None:
            hashing = hashers.submit(digest.update, data)
            try:
                out.write(data)
            finally:
                hashing.result()

        with path.open("wb", buffering=0) as out:
            batch: list[bytes] = []
            pending = 0
            inflight: asyncio.Future[None] | None = None
            try:
                async for chunk in request.stream():
                    batch.append(chunk)
                    pending += len(chunk)
                    if pending >= BATCH_BYTES:
                        data = b"".join(batch)
                        size += pending
                        batch, pending = [], 0
                        if inflight is not None:
                            await inflight
                        inflight = asyncio.ensure_future(run_in_threadpool(consume, out, data))
                if inflight is not None:
                    await inflight
                    inflight = None
                if batch:
                    await run_in_threadpool(consume, out, b"".join(batch))
                    size += pending
            finally:
                if inflight is not None:
                    await asyncio.wait({inflight})
            received = time.perf_counter()
            await run_in_threadpool(os.fsync, out.fileno())
        synced = time.perf_counter()
        return JSONResponse(
            {
                "name": name,
                "size": size,
                "sha256": digest.hexdigest(),
                "receive_s": round(received - started, 4),
                "fsync_s": round(synced - received, 4),
            },
            status_code=201,
        )

    def read_file(path: Path) -> Iterator[bytes]:
        with path.open("rb") as handle:
            while chunk := handle.read(READ_CHUNK):
                yield chunk

    async def download(request: Request) -> Response:
        name = request.path_params["name"]
        path = storage / Path(name).name
        if not path.is_file():
            return PlainTextResponse("not found", status_code=404)
        return StreamingResponse(
            read_file(path),
            media_type="application/octet-stream",
            headers={"Content-Length": str(path.stat().st_size)},
        )

    async def delete(request: Request) -> Response:
        (storage / Path(request.path_params["name"]).name).unlink(missing_ok=True)
        return Response(status_code=204)

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/upload", upload, methods=["POST"]),
            Route("/upload-batched", upload_batched, methods=["POST"]),
            Route("/upload-pipelined", upload_pipelined, methods=["POST"]),
            Route("/files/{name}", download, methods=["GET"]),
            Route("/files/{name}", delete, methods=["DELETE"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True, help="Where uploads are written")
    args = parser.parse_args()
    # The same uvicorn.run options as `medvault serve` (default loop and http: uvloop and
    # httptools when uvicorn[standard] is installed).
    uvicorn.run(
        build_app(args.dir), host=args.host, port=args.port, log_level="warning", access_log=False
    )


if __name__ == "__main__":
    main()
