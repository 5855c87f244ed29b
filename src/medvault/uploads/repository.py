"""Queries on uploads. Every change to an upload's progress is a compare-and-set on
(offset, lease), so a request whose lease ran out can never record anything."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from medvault.uploads.models import Upload, UploadChunk
from medvault.uploads.staging import SealedChunk


def get(session: Session, upload_id: uuid.UUID) -> Upload | None:
    return session.get(Upload, upload_id)


def _sealed(row: UploadChunk) -> SealedChunk:
    return SealedChunk(
        id=row.id,
        offset=row.offset,
        size=row.size,
        storage_key=row.storage_key,
        kek_id=row.kek_id,
        wrapped_dek=row.wrapped_dek,
    )


def chunks(session: Session, upload_id: uuid.UUID) -> list[SealedChunk]:
    rows = session.scalars(
        select(UploadChunk).where(UploadChunk.upload_id == upload_id).order_by(UploadChunk.seq)
    )
    return [_sealed(row) for row in rows]


def last_chunk(session: Session, upload_id: uuid.UUID) -> tuple[int, SealedChunk] | None:
    """The upload's last recorded chunk, with its number."""
    row = session.scalars(
        select(UploadChunk)
        .where(UploadChunk.upload_id == upload_id)
        .order_by(UploadChunk.seq.desc())
        .limit(1)
    ).first()
    return None if row is None else (row.seq, _sealed(row))


def take_lease(
    session: Session, upload_id: uuid.UUID, token: uuid.UUID, *, now: datetime, until: datetime
) -> bool:
    """Take the upload's lease if nobody holds a live one."""
    result = session.execute(
        update(Upload)
        .where(
            Upload.id == upload_id,
            or_(Upload.lock_token.is_(None), Upload.lock_expires_at < now),
        )
        .values(lock_token=token, lock_expires_at=until)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def renew_lease(session: Session, upload_id: uuid.UUID, token: uuid.UUID, until: datetime) -> bool:
    result = session.execute(
        update(Upload)
        .where(Upload.id == upload_id, Upload.lock_token == token)
        .values(lock_expires_at=until)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def release_lease(session: Session, upload_id: uuid.UUID, token: uuid.UUID) -> None:
    session.execute(
        update(Upload)
        .where(Upload.id == upload_id, Upload.lock_token == token)
        .values(lock_token=None, lock_expires_at=None)
    )


def record_chunk(
    session: Session,
    upload_id: uuid.UUID,
    token: uuid.UUID,
    chunk: SealedChunk,
    *,
    expected_offset: int,
    replaces: int | None,
    values: dict[str, object],
) -> bool:
    """Append ``chunk`` (in place of chunk ``replaces``, which it contains) and move the
    offset to its end, if this request still holds the lease and the offset is the one
    it started from. False: nothing was recorded, and the chunk must be discarded."""
    upload = session.execute(
        select(Upload.next_chunk).where(
            Upload.id == upload_id,
            Upload.lock_token == token,
            Upload.offset == expected_offset,
        )
    ).first()
    if upload is None:
        return False
    seq = upload.next_chunk
    end = chunk.offset + chunk.size
    moved = session.execute(
        update(Upload)
        .where(
            Upload.id == upload_id,
            Upload.lock_token == token,
            Upload.offset == expected_offset,
            Upload.next_chunk == seq,
        )
        .values(offset=end, next_chunk=seq + 1, **values)
    )
    if not moved.rowcount:  # type: ignore[attr-defined]
        return False
    if replaces is not None:
        session.execute(
            delete(UploadChunk).where(
                UploadChunk.upload_id == upload_id, UploadChunk.seq == replaces
            )
        )
    session.add(
        UploadChunk(
            upload_id=upload_id,
            seq=seq,
            id=chunk.id,
            offset=chunk.offset,
            size=chunk.size,
            storage_key=chunk.storage_key,
            kek_id=chunk.kek_id,
            wrapped_dek=chunk.wrapped_dek,
        )
    )
    return True


def drop_chunks(session: Session, upload_id: uuid.UUID) -> None:
    session.execute(delete(UploadChunk).where(UploadChunk.upload_id == upload_id))


def expired(session: Session, now: datetime, *, limit: int) -> Sequence[Upload]:
    return session.scalars(
        select(Upload).where(Upload.expires_at < now).order_by(Upload.expires_at).limit(limit)
    ).all()


def chunk_keys(session: Session, upload_id: uuid.UUID) -> set[str]:
    return set(
        session.scalars(
            select(UploadChunk.storage_key).where(UploadChunk.upload_id == upload_id)
        ).all()
    )
