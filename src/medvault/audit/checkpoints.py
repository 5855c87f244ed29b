"""Signed checkpoints of the audit log, and their copies in a witness directory.

A checkpoint says "the log had ``tree_size`` events with this root hash at this
time", signed with the vault's audit key (Ed25519). The signed message is a short
text *note*, modelled on C2SP's checkpoint / signed-note formats so that it can be
read, diffed and verified without this code::

    medvault audit log v1                                   (origin: log and format)
    1234                                                    (tree size, decimal)
    5lm8A1qoqo0gIYVPg3PYUHkHpXhS8EXc79uCbX9hj4c=            (root hash, base64)
    2026-11-23T21:14:00.123456Z                             (ISO-8601 UTC time)

Every line ends with ``\\n``; the signature covers exactly these UTF-8 bytes. The
time is part of the note so that a signature also pins *when* the log was that big.

A witness file is the note, a blank line, then one signature line::

    — <key id> <base64 Ed25519 signature>

After each checkpoint the sealer writes ``checkpoint-<size>.txt`` and ``latest`` to
the witness directory. Copied anywhere the database's owner cannot rewrite (another
host, WORM storage, an e-mail to the auditor), they prove the log was at least that
long with that root, which is what catches a truncated or rebuilt log.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from medvault.audit.merkle import HASH_SIZE
from medvault.audit.models import AuditCheckpoint
from medvault.crypto.signing_keys import SigningKey
from medvault.kit.private_files import make_private_dirs, write_private_file

logger = logging.getLogger(__name__)

ORIGIN: Final = "medvault audit log v1"
SIGNATURE_PREFIX: Final = "\u2014 "  # em dash + space, as in C2SP signed notes
LATEST_NAME: Final = "latest"
_FILE_NAME = re.compile(r"^checkpoint-(\d+)\.txt$")
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


class MalformedCheckpoint(ValueError):
    """Text that is not a signed checkpoint in our format."""


def format_note(tree_size: int, root_hash: bytes, created_at: datetime) -> str:
    """The exact text that a checkpoint's signature covers."""
    root = base64.b64encode(root_hash).decode()
    when = created_at.astimezone(UTC).strftime(_TIME_FORMAT)
    return f"{ORIGIN}\n{tree_size}\n{root}\n{when}\n"


def verify_checkpoint(note: str, signature: bytes, public_key: Ed25519PublicKey) -> bool:
    """Whether ``signature`` is ``public_key``'s Ed25519 signature of ``note``. Never raises."""
    try:
        public_key.verify(signature, note.encode("utf-8"))
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


@dataclass(frozen=True)
class SignedCheckpoint:
    tree_size: int
    root_hash: bytes
    created_at: datetime
    key_id: str
    signature: bytes

    @property
    def note(self) -> str:
        return format_note(self.tree_size, self.root_hash, self.created_at)

    def signed_note(self) -> str:
        """The witness-file text: note, blank line, signature line."""
        signature = base64.b64encode(self.signature).decode()
        return f"{self.note}\n{SIGNATURE_PREFIX}{self.key_id} {signature}\n"

    def verify(self, public_key: Ed25519PublicKey) -> bool:
        return verify_checkpoint(self.note, self.signature, public_key)

    @classmethod
    def from_row(cls, row: AuditCheckpoint) -> SignedCheckpoint:
        return cls(row.tree_size, row.root_hash, row.created_at, row.key_id, row.signature)


def sign_checkpoint(
    *, key: SigningKey, tree_size: int, root_hash: bytes, created_at: datetime
) -> SignedCheckpoint:
    # Microseconds are kept: both databases store them, so the note re-created from
    # the stored row is byte-for-byte the note that was signed.
    note = format_note(tree_size, root_hash, created_at)
    signature = key.private_key.sign(note.encode("utf-8"))
    return SignedCheckpoint(tree_size, root_hash, created_at, key.key_id, signature)


def _b64(value: str) -> bytes:
    return base64.b64decode(value.encode("ascii"), validate=True)


def parse_signed_note(text: str) -> SignedCheckpoint:
    """Read a witness file back; raises :class:`MalformedCheckpoint` on anything odd."""
    note, sep, signatures = text.partition("\n\n")
    lines = note.split("\n")
    if not sep or len(lines) != 4 or lines[0] != ORIGIN:
        raise MalformedCheckpoint("not a medvault audit checkpoint")
    sig_line = signatures.rstrip("\n")
    if not sig_line.startswith(SIGNATURE_PREFIX) or "\n" in sig_line:
        raise MalformedCheckpoint("expected exactly one signature line")
    try:
        key_id, signature = sig_line.removeprefix(SIGNATURE_PREFIX).split(" ")
        tree_size = int(lines[1]) if lines[1].isdigit() else -1
        root_hash = _b64(lines[2])
        created_at = datetime.strptime(lines[3], _TIME_FORMAT).replace(tzinfo=UTC)
        checkpoint = SignedCheckpoint(tree_size, root_hash, created_at, key_id, _b64(signature))
    except (ValueError, binascii.Error, UnicodeError) as exc:
        raise MalformedCheckpoint(f"unreadable checkpoint: {exc}") from None
    if tree_size < 0 or len(root_hash) != HASH_SIZE or checkpoint.note != note + "\n":
        raise MalformedCheckpoint("the note is not in canonical form")
    return checkpoint


class WitnessConflict(RuntimeError):
    """The witness already holds a different checkpoint for this size."""


class WitnessDirectory:
    """``checkpoint-<size>.txt`` files plus ``latest``, written atomically, never rewritten."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def file_for(self, tree_size: int) -> Path:
        return self.path / f"checkpoint-{tree_size}.txt"

    def record(self, checkpoint: SignedCheckpoint) -> None:
        """Export one checkpoint. An existing file for the size is never replaced.

        A different checkpoint for a size the witness already saw means the log was
        rebuilt; overwriting the old file would destroy the very evidence it exists
        to keep, so that raises :class:`WitnessConflict` instead.
        """
        make_private_dirs(self.path)
        data = checkpoint.signed_note().encode("utf-8")
        target = self.file_for(checkpoint.tree_size)
        if not write_private_file(target, data, exclusive=True) and target.read_bytes() != data:
            raise WitnessConflict(f"{target} holds a different checkpoint for this size")
        latest = self.latest()
        if latest is None or latest.tree_size <= checkpoint.tree_size:
            write_private_file(self.latest_path, data, exclusive=False)

    def latest(self) -> SignedCheckpoint | None:
        """The ``latest`` file, or None if there is none or it cannot be read."""
        try:
            return parse_signed_note(self.latest_path.read_text("utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeError, MalformedCheckpoint):
            logger.warning("unreadable witness file %s", self.latest_path)
            return None

    @property
    def latest_path(self) -> Path:
        return self.path / LATEST_NAME

    def checkpoint_files(self) -> list[tuple[int, Path]]:
        """Every ``checkpoint-<size>.txt`` as (size from its name, path), smallest first."""
        if not self.path.is_dir():
            return []
        found: list[tuple[int, Path]] = []
        for entry in self.path.iterdir():
            match = _FILE_NAME.match(entry.name)
            if match:
                found.append((int(match.group(1)), entry))
        found.sort()
        return found
