"""Several documents as one ZIP, streamed: each one read, checked and audited on its own.

Every document goes through :func:`reading.read_content`, exactly as a single download
does: the access policy, the scan gate, the integrity checks, and one audit event per
document (its details name the archive, so an auditor sees which reads went out
together). A document the caller may not read, or whose content cannot be served now,
is left out and named in ``contents.txt`` with the reason, in the same words whether it
does not exist or is not theirs.

The archive is written with :mod:`zipfile` onto an unseekable sink, so entries carry
data descriptors and nothing is buffered beyond one chunk: the plaintext never touches
the disk and memory stays flat whatever the documents weigh. Entries are stored, not
deflated: PDFs and images are compressed already, and deflating them would cost CPU for
a few per cent.
"""

from __future__ import annotations

import io
import re
import uuid
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, tzinfo

from sqlalchemy.orm import Session

from medvault.access.denials import Denial
from medvault.audit.context import AuditContext
from medvault.audit.denials import record_denial
from medvault.auth.principal import Principal
from medvault.documents import reading
from medvault.documents.filenames import served_filename
from medvault.kit.i18n import N_, gettext, translate
from medvault.kit.problems import Problem
from medvault.kit.read_conditions import ReadConditions
from medvault.runtime import Runtime

MAX_DOCUMENTS = 100
# Where a refused document's audit event says the attempt came from.
ARCHIVE_PATH = "/documents/archive"
_UNSAFE = re.compile(r'[\\/:*?"<>|\x00-\x1f\x7f]+')
MAX_NAME_CHARS = 120


@dataclass(frozen=True)
class ArchivedDocument:
    name: str  # its path inside the ZIP
    title: str
    sha256: str
    size: int


@dataclass(frozen=True)
class LeftOut:
    document_id: uuid.UUID
    reason: str  # English (marked or a problem's title): translated in contents.txt


class _Sink(io.RawIOBase):
    """Collects what ZipFile writes until the response takes it. Not seekable on purpose."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self._chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


def _entry_name(created: datetime, title: str, served: str, zone: tzinfo, used: set[str]) -> str:
    """ "2026-12-04 Letter from Dr Patel.pdf": the day first, so a folder sorts by date."""
    extension = served.rsplit(".", 1)[-1] if "." in served else "bin"
    stem = _UNSAFE.sub("_", title).strip(" .") or "document"
    stem = f"{created.astimezone(zone):%Y-%m-%d} {stem[:MAX_NAME_CHARS]}"
    name, number = f"{stem}.{extension}", 1
    while name.casefold() in used:
        number += 1
        name = f"{stem} ({number}).{extension}"
    used.add(name.casefold())
    return name


def stream(
    *,
    runtime: Runtime,
    principal: Principal,
    context: AuditContext,
    document_ids: Iterable[uuid.UUID],
    zone: tzinfo,
    now: datetime,
) -> Iterator[bytes]:
    """The ZIP's bytes, one document after the other, ending with ``contents.txt``."""
    archive_id = str(uuid.uuid4())
    sink = _Sink()
    used: set[str] = {"contents.txt"}
    archived: list[ArchivedDocument] = []
    left_out: list[LeftOut] = []
    with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_STORED) as archive:
        for document_id in dict.fromkeys(document_ids):
            base = reading.for_principal(principal, document_id)
            granted: list[reading.ReadGrant] = []

            def authorise(
                session: Session,
                base: reading.Authorise = base,
                granted: list[reading.ReadGrant] = granted,
            ) -> reading.ReadGrant:
                grant = base(session)
                granted.append(replace(grant, details={**grant.details, "archive": archive_id}))
                return granted[-1]

            try:
                plan = reading.read_content(
                    runtime=runtime,
                    context=context,
                    authorise=authorise,
                    conditions=ReadConditions(),
                )
            except Problem as problem:
                # The refusal is audited as a single download's would be (there the
                # problem handler does it); the archive goes on without this document.
                if isinstance(problem.denial, Denial):
                    record_denial(
                        runtime=runtime,
                        denial=problem.denial,
                        problem=problem,
                        path=ARCHIVE_PATH,
                        client_ip=context.client_ip,
                        user_agent=context.user_agent,
                        request_id=context.request_id,
                    )
                left_out.append(LeftOut(document_id, _reason(problem)))
                continue
            grant = granted[-1]
            version = grant.version
            name = _entry_name(
                grant.document.created_at,
                grant.document.title,
                served_filename(version.filename, version.content_type),
                zone,
                used,
            )
            info = zipfile.ZipInfo(name, date_time=_zip_time(grant.document.created_at, zone))
            info.file_size = version.size
            info.compress_type = zipfile.ZIP_STORED
            body = plan.body or iter(())
            try:
                with archive.open(info, mode="w") as entry:
                    for chunk in body:
                        entry.write(chunk)
                        yield sink.take()
            finally:
                # A client that hangs up mid-file closes this generator here: let go of
                # the blob stream too, not when the garbage collector gets to it.
                close = getattr(body, "close", None)
                if close is not None:
                    close()
            archived.append(
                ArchivedDocument(name, grant.document.title, version.sha256, version.size)
            )
            yield sink.take()
        archive.writestr(
            zipfile.ZipInfo("contents.txt", date_time=_zip_time(now, zone)),
            _contents(archived, left_out, now, zone),
        )
    yield sink.take()


def _reason(problem: Problem) -> str:
    # Not found and not yours read the same, as they do everywhere else.
    if problem.status in (403, 404):
        return N_("not found, or you may not open it")
    return problem.title


def _zip_time(moment: datetime, zone: tzinfo) -> tuple[int, int, int, int, int, int]:
    local = moment.astimezone(zone)
    # ZIP's DOS times start in 1980.
    if local.year < 1980:
        return (1980, 1, 1, 0, 0, 0)
    return (local.year, local.month, local.day, local.hour, local.minute, local.second)


def _contents(
    archived: list[ArchivedDocument], left_out: list[LeftOut], now: datetime, zone: tzinfo
) -> str:
    # In the language of the request that asked for the archive (the stream runs in
    # its context), like the page it was downloaded from.
    lines = [
        gettext(
            "Documents downloaded %(time)s (%(zone)s).",
            time=now.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
            zone=str(zone),
        ),
        gettext(
            "Each file's SHA-256 is the one the vault stored; a copy that differs was changed."
        ),
        "",
    ]
    lines += [f"{doc.name}\n  {doc.title}\n  SHA-256 {doc.sha256}" for doc in archived]
    if left_out:
        lines += ["", gettext("Left out:")]
        lines += [
            "  "
            + gettext(
                "document %(id)s: %(reason)s",
                id=str(item.document_id),
                reason=translate(item.reason),
            )
            for item in left_out
        ]
    return "\n".join(lines) + "\n"
