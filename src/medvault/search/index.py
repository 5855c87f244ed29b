"""Keeping the search index in step with the documents.

A document is indexed from its row (title, description), its current version's file
names and, when ``MEDVAULT_FULLTEXT`` is on, that version's extracted text, decrypted
from the encrypted store. The text is handed to the database only to be tokenised:
PostgreSQL keeps the weighted ``tsvector`` (title A, description B, file names C,
content D), SQLite the contentless FTS5 table; neither keeps the text.

**Deleting from a contentless FTS5 table (SQLite).** SQLite 3.40 has no
``contentless_delete``: a row is removed with FTS5's ``'delete'`` command given exactly
the values that were inserted, and wrong values silently corrupt the index. So each
``search_entries`` row records what was indexed: the metadata as it was (already
plaintext in this database) and, for the content, which version's text and its
SHA-256. Re-indexing reads that text back from the encrypted store and checks its
digest before using it. When it cannot (the text was re-extracted and the old blob
deleted, or the store refuses), the whole FTS5 table is rebuilt from the entries
instead (``'delete-all'``, then every document again): slower, never wrong.

Every function runs in the caller's session and transaction and never commits, so an
index change commits with the change it reflects.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    delete,
    func,
    literal_column,
    select,
    text,
)
from sqlalchemy.orm import Session

from medvault.crypto.errors import CryptoError
from medvault.documents import derived
from medvault.documents.models import DerivedKind, Document, DocumentVersion, VersionDerivative
from medvault.kit.clock import utcnow
from medvault.kit.problems import Problem
from medvault.runtime import Runtime
from medvault.search.models import SearchEntry
from medvault.search.terms import words_only
from medvault.storage.base import BlobStoreError

logger = logging.getLogger("medvault.search")

# Text beyond this is not indexed (on both engines alike): PostgreSQL refuses a tsvector
# over 1 MiB, and a document's first half-million characters find it.
MAX_INDEXED_CHARS = 500_000
_CONFIG_NAME = re.compile(r"^[a-z_]{1,63}$")
_FTS_INSERT = text(
    "INSERT INTO search_fts (rowid, title, description, filenames, content) "
    "VALUES (:rowid, :title, :description, :filenames, :content)"
)
_FTS_DELETE = text(
    "INSERT INTO search_fts (search_fts, rowid, title, description, filenames, content) "
    "VALUES ('delete', :rowid, :title, :description, :filenames, :content)"
)
_FTS_DELETE_ALL = text("INSERT INTO search_fts (search_fts) VALUES ('delete-all')")
_FTS_OPTIMIZE = text("INSERT INTO search_fts (search_fts) VALUES ('optimize')")


@dataclass(frozen=True)
class _Wanted:
    """What a document's index entry should hold."""

    version_id: uuid.UUID | None
    title: str
    description: str
    filenames: str
    artifact: VersionDerivative | None  # the text to index, when fulltext is on

    @property
    def content_sha256(self) -> str | None:
        return self.artifact.sha256 if self.artifact is not None else None


class _Unreadable(Exception):
    """A text that was indexed (or is to be) cannot be read back."""


def _filenames(version: DocumentVersion | None) -> str:
    if version is None:
        return ""
    names = dict.fromkeys(n for n in (version.original_filename, version.filename) if n)
    return "\n".join(names)


def _wanted(
    session: Session, runtime: Runtime, document: Document, version: DocumentVersion | None
) -> _Wanted:
    artifact = None
    if runtime.settings.fulltext and version is not None:
        # The caller's session, not derived.read_text's own: the extraction job may
        # index in the transaction that records the text.
        artifact = derived.artifact_for(session, version.id, DerivedKind.TEXT)
    return _Wanted(
        version_id=version.id if version is not None else None,
        title=document.title,
        description=document.description or "",
        filenames=_filenames(version),
        artifact=artifact,
    )


def _current_version(session: Session, document: Document) -> DocumentVersion | None:
    return session.scalar(
        select(DocumentVersion).where(
            DocumentVersion.document_id == document.id,
            DocumentVersion.version == document.current_version,
        )
    )


def _open_text(runtime: Runtime, artifact: VersionDerivative, sha256: str) -> str:
    """The artifact's text, checked against the digest it was indexed under."""
    if artifact.sha256 != sha256:
        raise _Unreadable("re-extracted since it was indexed")
    try:
        data = derived.open_artifact(runtime, artifact)
    except (CryptoError, BlobStoreError, Problem) as error:
        raise _Unreadable(type(error).__name__) from error
    if hashlib.sha256(data).hexdigest() != sha256:
        raise _Unreadable("digest mismatch")
    return data.decode("utf-8", "replace")[:MAX_INDEXED_CHARS]


def _indexed_text(session: Session, runtime: Runtime, entry: SearchEntry) -> str:
    """The content that ``entry`` was indexed with ("" when none)."""
    if entry.content_sha256 is None:
        return ""
    if entry.version_id is None:
        raise _Unreadable("no version recorded")
    artifact = derived.artifact_for(session, entry.version_id, DerivedKind.TEXT)
    if artifact is None:
        raise _Unreadable("text gone")
    return _open_text(runtime, artifact, entry.content_sha256)


def _new_text(runtime: Runtime, document_id: uuid.UUID, wanted: _Wanted) -> str | None:
    """The text to index now; None (index without content) if it cannot be read."""
    if wanted.artifact is None:
        return None
    try:
        return _open_text(runtime, wanted.artifact, wanted.artifact.sha256)
    except _Unreadable as error:
        # The document stays findable by its metadata; `medvault search reindex` retries.
        logger.warning("text of document %s not indexed: %s", document_id, error)
        return None


def _unchanged(entry: SearchEntry, wanted: _Wanted) -> bool:
    return (
        entry.version_id == wanted.version_id
        and entry.content_sha256 == wanted.content_sha256
        and entry.title == wanted.title
        and entry.description == wanted.description
        and entry.filenames == wanted.filenames
    )


def regconfig(config: str) -> ColumnElement[Any]:
    """The text search configuration as a SQL constant (validated: it is inlined)."""
    if not _CONFIG_NAME.match(config):
        raise ValueError(f"not a text search configuration name: {config!r}")
    return literal_column(f"'{config}'::regconfig")


# The weighted vector (title A, description B, file names C, text D), as one fixed
# statement compiled once: building it as an expression tree per upload was 12% of a
# PostgreSQL upload's CPU. The text configuration is a bound parameter, cast there.
_SET_VECTOR = text(
    "UPDATE search_entries SET tsv = "
    "setweight(to_tsvector(CAST(:config AS regconfig), :title), 'A') || "
    "setweight(to_tsvector(CAST(:config AS regconfig), :description), 'B') || "
    "setweight(to_tsvector(CAST(:config AS regconfig), :filenames), 'C') || "
    "setweight(to_tsvector(CAST(:config AS regconfig), :content), 'D') "
    "WHERE id = :id"
)


def _pg_vector(session: Session, runtime: Runtime, entry: SearchEntry, content: str) -> None:
    session.execute(
        _SET_VECTOR,
        {
            "config": runtime.settings.search_text_config,
            "title": words_only(entry.title),
            "description": words_only(entry.description),
            "filenames": words_only(entry.filenames),
            "content": words_only(content),
            "id": entry.id,
        },
    )
    session.expire(entry, ["tsv"])


def index_document(session: Session, runtime: Runtime, document_id: uuid.UUID) -> None:
    """(Re)index one document in the caller's transaction; a no-op if nothing changed."""
    _index(session, runtime, document_id, force=False)


def index_upload(
    session: Session,
    runtime: Runtime,
    document: Document,
    version: DocumentVersion,
    *,
    new_document: bool,
) -> None:
    """Index an upload's new version in its transaction, knowing what is new.

    The general path looks up the current version, its text and the entry; for an
    upload the caller holds the first, a version made in this transaction has no text
    yet, and a new document has no entry. Those lookups were a third of the upload's
    time under SQLite's write lock.
    """
    wanted = _Wanted(
        version_id=version.id,
        title=document.title,
        description=document.description or "",
        filenames=_filenames(version),
        artifact=None,
    )
    entry = None if new_document else _entry(session, document.id)
    _apply(session, runtime, document.id, wanted, entry, force=False)


def _entry(session: Session, document_id: uuid.UUID) -> SearchEntry | None:
    return session.scalar(select(SearchEntry).where(SearchEntry.document_id == document_id))


def _index(session: Session, runtime: Runtime, document_id: uuid.UUID, *, force: bool) -> None:
    document = session.get(Document, document_id)
    if document is None:
        remove_document(session, runtime, document_id)
        return
    version = _current_version(session, document)
    wanted = _wanted(session, runtime, document, version)
    _apply(session, runtime, document_id, wanted, _entry(session, document_id), force=force)


def _apply(
    session: Session,
    runtime: Runtime,
    document_id: uuid.UUID,
    wanted: _Wanted,
    entry: SearchEntry | None,
    *,
    force: bool,
) -> None:
    if entry is not None and not force and _unchanged(entry, wanted):
        return
    content = _new_text(runtime, document_id, wanted)
    sqlite = runtime.clinical.is_sqlite
    rebuild = False
    if entry is None:
        entry = SearchEntry(document_id=document_id)
        session.add(entry)
    elif sqlite:
        try:
            _fts_delete(session, runtime, entry)
        except _Unreadable as error:
            logger.info("search index rebuilt: document %s: %s", document_id, error)
            rebuild = True
    _record(entry, wanted, content)
    session.flush()
    if not sqlite:
        _pg_vector(session, runtime, entry, content or "")
    else:
        if rebuild:
            _rebuild_fts(session, runtime, known={entry.id: content})
        else:
            _fts_insert(session, entry, content or "")


def _record(entry: SearchEntry, wanted: _Wanted, content: str | None) -> None:
    entry.version_id = wanted.version_id
    entry.content_sha256 = wanted.content_sha256 if content is not None else None
    entry.title = wanted.title
    entry.description = wanted.description
    entry.filenames = wanted.filenames
    entry.indexed_at = utcnow()


def _values(entry: SearchEntry, content: str) -> dict[str, object]:
    return {
        "rowid": entry.id,
        "title": entry.title,
        "description": entry.description,
        "filenames": entry.filenames,
        "content": content,
    }


def _fts_insert(session: Session, entry: SearchEntry, content: str) -> None:
    session.execute(_FTS_INSERT, _values(entry, content))


def _fts_delete(session: Session, runtime: Runtime, entry: SearchEntry) -> None:
    """Remove ``entry``'s tokens: raises _Unreadable if its indexed text is gone."""
    content = _indexed_text(session, runtime, entry)
    session.execute(_FTS_DELETE, _values(entry, content))


def _rebuild_fts(session: Session, runtime: Runtime, *, known: dict[int, str | None]) -> int:
    """Empty the FTS5 table and index every document again (SQLite's safe fallback).

    Every entry is re-inserted from the document as it is now, so nothing old needs to
    be read back. ``known`` holds texts already at hand, by entry id.
    """
    session.execute(_FTS_DELETE_ALL)
    count = 0
    for entry in list(session.scalars(select(SearchEntry).order_by(SearchEntry.id))):
        document = session.get(Document, entry.document_id)
        if document is None:
            session.delete(entry)
            continue
        wanted = _wanted(session, runtime, document, _current_version(session, document))
        content = (
            known[entry.id] if entry.id in known else _new_text(runtime, entry.document_id, wanted)
        )
        _record(entry, wanted, content)
        _fts_insert(session, entry, content or "")
        count += 1
    session.flush()
    return count


def withdraw_text(session: Session, runtime: Runtime, version_id: uuid.UUID) -> None:
    """Take a version's text out of the index while it can still be read.

    Call it in the transaction that replaces or deletes the version's text artifact,
    *before* the old row goes: SQLite can only remove the tokens of a contentless row
    by reading the old text back, and once its blob is deleted only a full rebuild
    can. The document stays indexed by its metadata until it is indexed again.
    """
    for entry in session.scalars(
        select(SearchEntry).where(
            SearchEntry.version_id == version_id, SearchEntry.content_sha256.is_not(None)
        )
    ):
        if runtime.clinical.is_sqlite:
            try:
                _fts_delete(session, runtime, entry)
            except _Unreadable:
                entry.content_sha256 = None
                session.flush()
                _rebuild_fts(session, runtime, known={})
                return
            entry.content_sha256 = None
            session.flush()
            _fts_insert(session, entry, "")
        else:
            document_id = entry.document_id
            entry.content_sha256 = None
            session.flush()
            _pg_vector(session, runtime, entry, "")
            logger.debug("text of document %s withdrawn from the index", document_id)


def optimize_fts(session: Session) -> None:
    """Merge the SQLite FTS index into one segment, dropping what deletes left behind.

    A contentless FTS5 delete only adds a tombstone; the deleted words stay in older
    segments until a merge. Destruction (``governance.destruction``) needs them gone.
    """
    session.execute(_FTS_OPTIMIZE)


def remove_document(session: Session, runtime: Runtime, document_id: uuid.UUID) -> None:
    """Take a document out of the index (before its row is destroyed)."""
    entry = session.scalar(select(SearchEntry).where(SearchEntry.document_id == document_id))
    if entry is None:
        return
    if runtime.clinical.is_sqlite:
        try:
            _fts_delete(session, runtime, entry)
        except _Unreadable:
            session.delete(entry)
            session.flush()
            _rebuild_fts(session, runtime, known={})
            return
    session.delete(entry)
    session.flush()


def reindex_all(
    runtime: Runtime,
    *,
    batch: int = 500,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Index every document afresh, in committed batches; returns how many.

    Rebuilds rather than patches: on SQLite the FTS5 table is emptied first, so after
    ``MEDVAULT_FULLTEXT=off`` no content token is left anywhere in the index; on
    PostgreSQL each tsvector is recomputed. Entries of documents that no longer exist
    are dropped.
    """
    with runtime.clinical.session() as session:
        total = int(session.scalar(select(func.count()).select_from(Document)) or 0)
        session.execute(
            delete(SearchEntry).where(SearchEntry.document_id.not_in(select(Document.id)))
        )
        if runtime.clinical.is_sqlite:
            session.execute(_FTS_DELETE_ALL)
            # Every entry now describes tokens that are gone: forget them, so each
            # document below is inserted afresh rather than "changed".
            session.execute(delete(SearchEntry))
        session.commit()
    done = 0
    after: uuid.UUID | None = None
    while True:
        with runtime.clinical.session() as session:
            query = select(Document.id).order_by(Document.id).limit(batch)
            if after is not None:
                query = query.where(Document.id > after)
            ids = list(session.scalars(query))
            if not ids:
                break
            for document_id in ids:
                # Forced: the configuration or MEDVAULT_FULLTEXT may have changed.
                _index(session, runtime, document_id, force=True)
            session.commit()
        done += len(ids)
        after = ids[-1]
        if progress is not None:
            progress(done, max(total, done))
    return done
