"""The naive peer: what a plain Starlette app does to store and serve small files.

``POST /upload`` takes a multipart form with a ``file`` field (or, for the raw mode, the
request body with ``?filename=``), writes it to a directory and inserts one row (id,
filename, content_type, size, path, created_at) with SQLAlchemy Core. It answers 201
with ``{"id": ...}``. ``GET /files/{id}`` looks the row up and sends the file with
Starlette's ``FileResponse``.

No auth, no encryption, no audit, no hashing, no malware or type checks, no background
jobs, and no fsync of its own. The database is the kind the vault uses in the same run
(a SQLite file in WAL mode, or a fresh PostgreSQL database) with its defaults. So a
commit is still durable the way the database makes it by default: SQLite's default
``synchronous=FULL`` syncs the WAL at every commit, and PostgreSQL's
``synchronous_commit=on`` flushes its WAL. SQLAlchemy's default pool (5 + 10 overflow)
and SQLite's default 5 s busy timeout apply, as they would for naive code.

It runs under uvicorn with the vault's own server options (``uvicorn_options``, the
same httptools protocol with its head guards, the default loop), so the ratio vault / peer
isolates what the vault's request path costs, not what the server stack costs.

Run: ``python bench/naive_peer.py --port 8124 --dir /tmp/somewhere [--database-url URL]``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import uvicorn
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    Table,
    Text,
    Uuid,
    create_engine,
    event,
    insert,
    select,
)
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from common import HOST, ManagedServer, ServerProcess, free_port

# Set by main() for uvicorn's app factory, which is how several worker processes get it.
DATABASE_ENV = "NAIVE_PEER_DATABASE_URL"
STORAGE_ENV = "NAIVE_PEER_STORAGE_DIR"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{db}"

metadata = MetaData()
files = Table(
    "files",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("filename", Text, nullable=False),
    Column("content_type", Text, nullable=False),
    Column("size", Integer, nullable=False),
    Column("path", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)


def make_engine(url: str) -> Engine:
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _wal(dbapi_connection: Any, _record: Any) -> None:
            # WAL so downloads' reads do not wait for uploads' writes, as in the vault;
            # synchronous stays at SQLite's default.
            dbapi_connection.execute("PRAGMA journal_mode=WAL")

    return engine


def build_app(database_url: str, storage: Path) -> Starlette:
    engine = make_engine(database_url)

    def store(data: bytes, filename: str, content_type: str) -> uuid.UUID:
        file_id = uuid.uuid4()
        path = storage / file_id.hex
        path.write_bytes(data)
        with engine.begin() as conn:
            conn.execute(
                insert(files).values(
                    id=file_id,
                    filename=filename,
                    content_type=content_type,
                    size=len(data),
                    path=str(path),
                    created_at=datetime.now(UTC),
                )
            )
        return file_id

    def lookup(file_id: uuid.UUID) -> tuple[str, str, str] | None:
        with engine.connect() as conn:
            row = conn.execute(
                select(files.c.path, files.c.content_type, files.c.filename).where(
                    files.c.id == file_id
                )
            ).first()
        return None if row is None else (row.path, row.content_type, row.filename)

    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    async def upload(request: Request) -> Response:
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            async with request.form() as form:
                part = form.get("file")
                if not isinstance(part, UploadFile):
                    return PlainTextResponse("a 'file' field is required", status_code=400)
                data = await part.read()
                filename = part.filename or "upload"
                content_type = part.content_type or "application/octet-stream"
        else:
            data = await request.body()
            filename = request.query_params.get("filename", "upload")
            content_type = request.headers.get("content-type", "application/octet-stream")
        # One hop to a worker thread for both blocking steps, the file and the row.
        file_id = await run_in_threadpool(store, data, filename, content_type)
        return JSONResponse({"id": str(file_id)}, status_code=201)

    async def download(request: Request) -> Response:
        try:
            file_id = uuid.UUID(request.path_params["id"])
        except ValueError:
            return PlainTextResponse("not found", status_code=404)
        row = await run_in_threadpool(lookup, file_id)
        if row is None:
            return PlainTextResponse("not found", status_code=404)
        path, content_type, filename = row
        return FileResponse(path, media_type=content_type, filename=filename)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        engine.dispose()

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/upload", upload, methods=["POST"]),
            Route("/files/{id}", download, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def create_app() -> Starlette:
    """uvicorn's app factory (``--workers`` > 1), configured through the environment."""
    from medvault.config import Settings
    from medvault.ops.server import configure_guarded_protocol

    # The protocol crosses the spawn by import path, so its limits are set where it runs,
    # as `medvault serve` does for its own worker processes.
    configure_guarded_protocol(Settings())
    return build_app(os.environ[DATABASE_ENV], Path(os.environ[STORAGE_ENV]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", type=Path, required=True, help="Where uploads are written")
    parser.add_argument("--database-url", help="SQLAlchemy URL (default: <dir>/peer.db)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    args = parser.parse_args()

    from medvault.config import Settings
    from medvault.ops.server import GuardedHttpProtocol, uvicorn_options

    storage: Path = args.dir / "files"
    storage.mkdir(parents=True, exist_ok=True)
    database_url = args.database_url or f"sqlite:///{args.dir / 'peer.db'}"
    engine = make_engine(database_url)
    metadata.create_all(engine)  # once, before any worker process starts
    engine.dispose()
    # Exactly the options `medvault serve` passes (MEDVAULT_* server settings included).
    options = {
        "host": args.host,
        "port": args.port,
        "log_level": "warning",
        "access_log": False,
        **uvicorn_options(Settings()),
    }
    if args.workers == 1:
        uvicorn.run(build_app(database_url, storage), **options)
        return
    os.environ[DATABASE_ENV] = database_url
    os.environ[STORAGE_ENV] = str(storage)
    # The module is found in the workers because spawn hands them this sys.path.
    uvicorn.run(
        "naive_peer:create_app",
        factory=True,
        workers=args.workers,
        **(options | {"http": GuardedHttpProtocol}),
    )


class PeerServer(ManagedServer):
    """The naive peer as a subprocess on a free port, with a throw-away directory.

    ``database_url`` is a SQLAlchemy URL (a fresh PostgreSQL database, see
    ``pg_database``); without it the peer uses a SQLite file in its directory.
    ``extra_env`` is passed on, so ``MEDVAULT_*`` server settings apply to both servers.
    """

    def __init__(
        self,
        *,
        database_url: str | None = None,
        workers: int = 1,
        extra_env: Mapping[str, str] | None = None,
        name: str = "naive-peer",
    ) -> None:
        self.name = name
        self.port = free_port()
        self.data_dir = Path(tempfile.mkdtemp(prefix="medvault-peer-"))
        self.base_url = f"http://{HOST}:{self.port}"
        argv = [sys.executable, str(Path(__file__).resolve()), "--port", str(self.port),
                "--dir", str(self.data_dir), "--workers", str(workers)]  # fmt: skip
        if database_url:
            argv += ["--database-url", database_url]
        self.server = ServerProcess(
            name=name,
            argv=argv,
            env={**os.environ, **(extra_env or {})},
            log_path=self.data_dir / "server.log",
        )


@contextlib.contextmanager
def pg_database(stem: str = "naive_peer") -> Iterator[str]:
    """A fresh PostgreSQL database for the peer (its SQLAlchemy URL), dropped afterwards."""
    name = f"medvault_bench_{secrets.token_hex(4)}_{stem}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_URL.format(db=name)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
