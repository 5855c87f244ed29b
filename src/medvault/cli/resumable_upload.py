"""``medvault upload`` through tus: a large file in chunks, resumable after an interruption.

The URL of each unfinished upload is kept in a small state file (``UnfinishedUploads``)
so that ``--resume`` finds it again; the SDK (``VaultClient.upload_resumable``) does the
protocol, the retries and the checksums.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import time
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from medvault.cli.console import err, human_size
from medvault.client import (
    Document,
    ResumableUpload,
    UploadProgress,
    VaultClient,
    VaultClientError,
    VaultError,
)

STATE_VERSION = 1
# The server keeps an unfinished upload at most 30 days (MEDVAULT_UPLOAD_EXPIRY_SECONDS'
# ceiling); an entry untouched for longer can only point at nothing.
FORGET_AFTER_SECONDS = 30 * 86400
RESUME_HINT = "To continue where it stopped, run the same command again with --resume."


@dataclass(frozen=True)
class NewDocument:
    """What ``medvault upload`` files the bytes as."""

    patient_id: str
    document_type: str
    title: str | None
    description: str | None
    classification: str | None
    on_duplicate: str | None


def default_state_path() -> Path:
    """``$XDG_CACHE_HOME/medvault/uploads.json``, else ``~/.cache/medvault/uploads.json``."""
    cache = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(cache) if cache and Path(cache).is_absolute() else Path.home() / ".cache"
    return base / "medvault" / "uploads.json"


class UnfinishedUploads:
    """The user's resumable uploads that have not finished: key → upload URL.

    The key is a SHA-256 of the server, the file (resolved path, size, mtime) and the
    document's fields, so only the same command on the same unchanged file finds an
    entry, and the file names no path, file or patient in clear. It never holds the
    token. It is replaced whole (write, then rename) with mode 0600 in a 0700 folder.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_state_path()

    @staticmethod
    def key(server: str, file: Path, document: NewDocument) -> str:
        stat = file.stat()
        identity = [server.rstrip("/"), str(file.resolve()), stat.st_size, stat.st_mtime_ns]
        text = json.dumps([*identity, *astuple(document)], ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()

    def get(self, key: str) -> str | None:
        entry = self._load().get(key)
        return str(entry["url"]) if entry and isinstance(entry.get("url"), str) else None

    def put(self, key: str, url: str) -> None:
        entries = self._load()
        entries[key] = {"url": url, "saved_at": int(time.time())}
        self._save(entries)

    def remove(self, key: str) -> None:
        entries = self._load()
        if entries.pop(key, None) is not None:
            self._save(entries)

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}  # unreadable or damaged: only the chance to resume is lost
        uploads = data.get("uploads") if isinstance(data, dict) else None
        if not isinstance(uploads, dict):
            return {}
        return {k: v for k, v in uploads.items() if isinstance(v, dict)}

    def _save(self, entries: dict[str, dict[str, Any]]) -> None:
        horizon = time.time() - FORGET_AFTER_SECONDS
        kept = {k: v for k, v in entries.items() if _number(v.get("saved_at")) >= horizon}
        body = json.dumps({"version": STATE_VERSION, "uploads": kept}, indent=1) + "\n"
        temp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}")
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Created 0600 from the start (whatever the umask), never widened later.
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(body)
            temp.replace(self.path)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            err.print(
                f"[yellow]Cannot update {escape(str(self.path))} "
                f"({escape(exc.strerror or str(exc))}): --resume will not find this upload."
                "[/yellow]"
            )


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def upload_resumably(
    vault: VaultClient,
    path: Path,
    document: NewDocument,
    *,
    resume: bool,
    chunk_bytes: int,
    progress: UploadProgress,
) -> Document:
    """Upload ``path`` through tus, continuing a known unfinished upload if ``resume``.

    Without ``resume`` a known unfinished upload of the same file is discarded, once the
    new one exists (it would be unreachable anyway: the state file keeps one per file).
    Ctrl-C leaves the upload resumable and exits 130; an error does too, unless the
    server says the upload is over, and the error then carries the hint to resume.
    """
    uploads = UnfinishedUploads()
    key = uploads.key(vault.base_url, path, document)
    known = uploads.get(key)
    resume_url: str | None = None
    if known is not None and resume:
        try:
            status = vault.resumable_status(known)
        except VaultError as exc:
            if exc.status not in (404, 410):
                raise
            err.print("The earlier upload of this file can no longer go on; starting again.")
            uploads.remove(key)
        else:
            resume_url = known
            size = path.stat().st_size
            err.print(f"resuming at {human_size(status.offset)} of {human_size(size)}")
    elif known is not None:
        err.print(
            "An earlier upload of this file did not finish; it is discarded and a new one "
            "starts. (Next time, add --resume to continue an interrupted upload.)"
        )
    elif resume:
        err.print("No unfinished upload of this file is known here; starting a new one.")

    current = resume_url

    def created(upload: ResumableUpload) -> None:
        nonlocal current
        current = upload.url
        uploads.put(key, upload.url)
        if known is not None and resume_url is None:
            with contextlib.suppress(VaultClientError):
                vault.cancel_resumable(known)

    try:
        stored = vault.upload_resumable(
            path,
            patient_id=document.patient_id,
            document_type=document.document_type,
            title=document.title,
            description=document.description,
            classification=document.classification,
            on_duplicate=document.on_duplicate,
            chunk_size=chunk_bytes,
            resume_url=resume_url,
            on_created=created,
            progress=progress,
        )
    except KeyboardInterrupt:
        if current is None:
            err.print("Interrupted before the upload started.")
        else:
            err.print(f"Interrupted. {RESUME_HINT}")
        raise typer.Exit(130) from None
    except VaultClientError as exc:
        if current is not None and _still_open(vault, current):
            exc.add_note(RESUME_HINT)
        else:
            uploads.remove(key)
        raise
    uploads.remove(key)
    return stored


def _still_open(vault: VaultClient, url: str) -> bool:
    """Whether the server would take more of this upload (or may: it cannot be asked)."""
    try:
        vault.resumable_status(url)
    except VaultError as exc:
        return exc.status not in (404, 410)
    except VaultClientError:
        return True
    return True
