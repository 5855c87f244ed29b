"""What the index holds: content only with fulltext on, nothing readable outside the
index itself, and a SQLite FTS5 table that stays consistent when old text is gone."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, inspect, select, text

from medvault.app import create_app
from medvault.documents.models import DerivedKind, Document, VersionDerivative
from medvault.runtime import Runtime, build_runtime
from medvault.search.index import index_document, reindex_all
from medvault.search.models import SearchEntry
from tests.search.support import search, store_text
from tests.support.backends import SettingsFactory
from tests.support.factories import create_patient, pdf_bytes, upload_raw


def _marker() -> str:
    # Ends in "x": no stemmer changes it, so the token in the index is the word itself.
    return f"zq{uuid.uuid4().hex[:12]}x"


def index_terms(runtime: Runtime) -> set[str]:
    """Every token/lexeme the index holds, read from the database."""
    with runtime.clinical.engine.connect() as connection:
        if runtime.clinical.is_sqlite:
            connection.execute(
                text(
                    "CREATE VIRTUAL TABLE IF NOT EXISTS temp.vocab "
                    "USING fts5vocab(main, search_fts, 'row')"
                )
            )
            return set(connection.execute(text("SELECT term FROM temp.vocab")).scalars())
        rows = connection.execute(
            text("SELECT word FROM ts_stat('SELECT tsv FROM search_entries')")
        ).scalars()
        return set(rows)


@pytest.fixture
def fulltext_off(make_settings: SettingsFactory, runtime: Runtime) -> Iterator[Runtime]:
    """A second runtime on the same databases and store, with MEDVAULT_FULLTEXT=off."""
    off = build_runtime(make_settings(fulltext=False))
    yield off
    off.close()


def test_fulltext_off_keeps_content_out_and_reindex_removes_it(
    client: TestClient, runtime: Runtime, fulltext_off: Runtime
) -> None:
    patient = create_patient(client)
    marker = _marker()
    doc = upload_raw(client, patient, pdf_bytes(), title="Sleep study").json()["id"]
    store_text(runtime, doc, f"Apnoea index noted {marker} overnight.")
    assert search(client, marker) == [doc]
    assert marker in index_terms(runtime)

    reindexed = reindex_all(fulltext_off, batch=2)
    assert reindexed == 1
    assert marker not in index_terms(runtime)
    assert "sleep" in index_terms(runtime)
    with TestClient(create_app(runtime=fulltext_off)) as off_client:
        off_client.headers.update(client.headers)
        assert search(off_client, marker) == []
        assert search(off_client, "sleep") == [doc]
        page = off_client.get("/api/v1/documents", params={"q": "sleep"}).json()
        assert page["full_text"] is False
        # Without content, the snippet comes from the metadata.
        assert {"text": "Sleep", "match": True} in page["items"][0]["snippet"]

    # New text arriving while fulltext is off is not indexed either.
    other = upload_raw(client, patient, pdf_bytes(), title="Letter").json()["id"]
    store_text(fulltext_off, other, f"{marker} again")
    assert marker not in index_terms(runtime)


def _table_rows(runtime: Runtime, table: str) -> list[str]:
    with runtime.clinical.engine.connect() as connection:
        if runtime.clinical.is_sqlite:
            rows = connection.execute(text(f'SELECT * FROM "{table}"'))  # noqa: S608
            return [repr(tuple(row)) for row in rows]
        return list(connection.execute(text(f'SELECT t::text FROM "{table}" t')).scalars())  # noqa: S608


def test_the_content_is_nowhere_but_in_the_index(client: TestClient, runtime: Runtime) -> None:
    marker = _marker()
    patient = create_patient(client)
    doc = upload_raw(client, patient, pdf_bytes(), title="Ultrasound").json()["id"]
    store_text(runtime, doc, f"Findings: {marker} lesion of the liver, {marker} again.")
    assert search(client, marker) == [doc]
    tables = inspect(runtime.clinical.engine).get_table_names()
    index_tables = {"search_entries"} | {t for t in tables if t.startswith("search_fts")}
    for table in set(tables) - index_tables:
        assert not any(marker in row for row in _table_rows(runtime, table)), table
    with runtime.clinical.read_session() as session:
        entry = session.scalar(select(SearchEntry))
        assert entry is not None
        readable = (entry.title, entry.description, entry.filenames, entry.content_sha256)
        assert marker not in repr(readable)
    with runtime.clinical.engine.connect() as connection:
        if runtime.clinical.is_sqlite:
            # Contentless: no content table, and the columns read back as NULL.
            assert "search_fts_content" not in tables
            values = connection.execute(
                text("SELECT title, content FROM search_fts WHERE search_fts MATCH :m"),
                {"m": f'"{marker}"'},
            ).one()
            assert tuple(values) == (None, None)
            # The token itself is in the index's b-tree pages (that is the index).
            data = b"".join(connection.execute(text("SELECT block FROM search_fts_data")).scalars())
            assert marker.encode() in data
            assert b"lesion of the liver" not in data  # tokens, not sentences
        else:
            # The tsvector: lexemes with positions (and weights), never the sentence.
            vector = connection.execute(text("SELECT tsv::text FROM search_entries")).scalar()
            assert vector is not None
            # Content lexemes carry weight D, which PostgreSQL prints without a letter.
            assert re.search(rf"'{marker}':\d+,\d+( |$)", vector), vector
            assert "'ultrasound':1A" in vector
            assert "Findings:" not in vector


def test_sqlite_rebuilds_when_indexed_text_can_no_longer_be_read(
    client: TestClient, runtime: Runtime
) -> None:
    if not runtime.clinical.is_sqlite:
        pytest.skip("PostgreSQL deletes tsvector rows without reading anything back")
    patient = create_patient(client)
    kept, lost = _marker(), _marker()
    keeper = upload_raw(client, patient, pdf_bytes(), title="Keeper").json()["id"]
    store_text(runtime, keeper, f"{kept} stays findable")
    victim = upload_raw(client, patient, pdf_bytes(), title="Victim").json()["id"]
    store_text(runtime, victim, f"{lost} text whose blob disappears")
    with runtime.clinical.session() as session:
        artifact = session.scalar(
            select(VersionDerivative)
            .where(VersionDerivative.kind == DerivedKind.TEXT.value)
            .order_by(VersionDerivative.created_at.desc())
        )
        assert artifact is not None
        runtime.blobs.delete(artifact.storage_key)
    # A title change needs the old values to delete the row; the text cannot be read.
    # REST has no metadata edit: change the title as FHIR's update does, then index.
    with runtime.clinical.session() as session:
        document = session.get(Document, uuid.UUID(victim))
        assert document is not None
        document.title = "Renamed"
        index_document(session, runtime, document.id)
        session.commit()
    assert search(client, "renamed") == [victim]
    assert search(client, "victim") == []
    assert search(client, kept) == [keeper]
    assert search(client, lost) == []  # its text is unreadable, so it left the index
    with runtime.clinical.engine.begin() as connection:
        connection.execute(text("INSERT INTO search_fts(search_fts) VALUES('integrity-check')"))
    with runtime.clinical.read_session() as session:
        entry = session.scalar(
            select(SearchEntry).where(SearchEntry.document_id == uuid.UUID(victim))
        )
        assert entry is not None and entry.content_sha256 is None


def test_an_upload_indexes_exactly_what_a_full_reindex_would(
    client: TestClient, runtime: Runtime
) -> None:
    # Uploads take a shortcut (search.index.index_upload: no lookups for what a new
    # version cannot have yet). Re-indexing the general way afterwards must find
    # nothing to change, for a new document and for a new version of one.
    patient = create_patient(client)
    created = upload_raw(client, patient, pdf_bytes(), filename="first-letter.pdf").json()
    again = client.post(
        f"/api/v1/documents/{created['id']}/versions",
        params={"filename": "second-letter.pdf"},
        content=pdf_bytes(5000),
        headers={"content-type": "application/pdf"},
    )
    assert again.status_code == 201, again.text
    writes: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if not statement.lstrip().upper().startswith(("SELECT", "BEGIN", "PRAGMA")):
            writes.append(statement)

    document_id = uuid.UUID(created["id"])
    event.listen(runtime.clinical.engine, "before_cursor_execute", seen)
    try:
        with runtime.clinical.session() as session:
            index_document(session, runtime, document_id)
            session.flush()
            entry = session.scalars(
                select(SearchEntry).where(SearchEntry.document_id == document_id)
            ).one()
            assert entry.filenames is not None and "second-letter" in entry.filenames
            session.rollback()
    finally:
        event.remove(runtime.clinical.engine, "before_cursor_execute", seen)
    assert [w for w in writes if not w.strip().upper().startswith("ROLLBACK")] == []
