"""Key-encryption keys (KEKs) and the wrapping of per-version data keys (DEKs).

A DEK never touches disk unwrapped. It is wrapped with AES-256-GCM under the active
KEK, with the version id as associated data, so a wrapped DEK copied onto another
version's row fails to unwrap. The wrap lives in the database row only (blob headers
are detached: ``crypto.envelope.DETACHED_KEK_ID``). Old KEKs stay in the keyring after
rotation until ``keys retire``: older blobs' headers and older database backups still
hold wraps under them.
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from medvault.crypto.errors import IntegrityError, KeyringError, UnknownKekError
from medvault.kit.private_files import write_private_file

KEY_BYTES = 32
WRAP_NONCE_BYTES = 12
WRAP_AAD_PREFIX = b"medvault/dek/v1|"
WRAPPED_DEK_BYTES = WRAP_NONCE_BYTES + KEY_BYTES + 16
# The KEK id a row carries once its data key was destroyed (records governance): no
# KEK has it, so nothing can unwrap the (empty) wrap beside it.
DESTROYED_KEK_ID = "destroyed"


@dataclass(frozen=True)
class Kek:
    id: str
    key: bytes
    created_at: datetime


@dataclass(frozen=True)
class WrappedDek:
    kek_id: str
    wrapped: bytes


def new_dek() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def _new_kek_id(now: datetime) -> str:
    return f"kek-{now:%Y%m%d}-{secrets.token_hex(4)}"


class Keyring:
    """An ordered set of KEKs with exactly one active for new wraps."""

    def __init__(self, keks: list[Kek], active_id: str) -> None:
        self._keks = {kek.id: kek for kek in keks}
        if active_id not in self._keks:
            raise KeyringError(f"active KEK {active_id!r} is not in the keyring")
        for kek in keks:
            if len(kek.key) != KEY_BYTES:
                raise KeyringError(f"KEK {kek.id!r} is not {KEY_BYTES} bytes")
        self.active_id = active_id

    @classmethod
    def generate(cls) -> Keyring:
        now = datetime.now(UTC)
        kek = Kek(id=_new_kek_id(now), key=secrets.token_bytes(KEY_BYTES), created_at=now)
        return cls([kek], kek.id)

    @property
    def active(self) -> Kek:
        return self._keks[self.active_id]

    @property
    def kek_ids(self) -> list[str]:
        return list(self._keks)

    def get(self, kek_id: str) -> Kek:
        try:
            return self._keks[kek_id]
        except KeyError:
            raise UnknownKekError(f"KEK {kek_id!r} is not in the keyring") from None

    def with_new_active_kek(self) -> Keyring:
        now = datetime.now(UTC)
        kek = Kek(id=_new_kek_id(now), key=secrets.token_bytes(KEY_BYTES), created_at=now)
        return Keyring([*self._keks.values(), kek], kek.id)

    def without(self, kek_id: str) -> Keyring:
        """This keyring with one (inactive) KEK removed: what it wrapped is unreadable."""
        if kek_id == self.active_id:
            raise KeyringError(f"KEK {kek_id!r} is the active key; rotate first")
        self.get(kek_id)
        return Keyring([kek for kek in self._keks.values() if kek.id != kek_id], self.active_id)

    def wrap_dek(self, dek: bytes, *, version_id: uuid.UUID) -> WrappedDek:
        kek = self.active
        nonce = secrets.token_bytes(WRAP_NONCE_BYTES)
        sealed = AESGCM(kek.key).encrypt(nonce, dek, WRAP_AAD_PREFIX + version_id.bytes)
        return WrappedDek(kek_id=kek.id, wrapped=nonce + sealed)

    def unwrap_dek(self, wrapped: WrappedDek, *, version_id: uuid.UUID) -> bytes:
        kek = self.get(wrapped.kek_id)
        nonce, sealed = wrapped.wrapped[:WRAP_NONCE_BYTES], wrapped.wrapped[WRAP_NONCE_BYTES:]
        try:
            return AESGCM(kek.key).decrypt(nonce, sealed, WRAP_AAD_PREFIX + version_id.bytes)
        except InvalidTag:
            raise IntegrityError("wrapped DEK failed authentication") from None

    def rewrap(self, wrapped: WrappedDek, *, version_id: uuid.UUID) -> WrappedDek:
        return self.wrap_dek(self.unwrap_dek(wrapped, version_id=version_id), version_id=version_id)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": 1,
                "active": self.active_id,
                "keys": [
                    {
                        "id": kek.id,
                        "key": base64.b64encode(kek.key).decode(),
                        "created_at": kek.created_at.isoformat(),
                    }
                    for kek in self._keks.values()
                ],
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> Keyring:
        try:
            data = json.loads(text)
            keks = [
                Kek(
                    id=str(item["id"]),
                    key=base64.b64decode(item["key"], validate=True),
                    created_at=datetime.fromisoformat(item["created_at"]),
                )
                for item in data["keys"]
            ]
            return cls(keks, str(data["active"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise KeyringError(f"keyring is malformed: {exc}") from None


def write_keyring_file(path: Path, keyring: Keyring) -> None:
    """Replace the keyring file atomically (mode 0600): a crash never leaves half a keyring."""
    write_private_file(path, keyring.to_json().encode(), exclusive=False)


def load_keyring(*, env_value: str | None, path: Path, create: bool) -> Keyring:
    """The keyring from the environment if given, else from its file (made on first start)."""
    if env_value:
        return Keyring.from_json(env_value)
    if path.exists():
        if path.stat().st_mode & 0o077:
            raise KeyringError(f"{path} is readable by other users; chmod 600 it")
        return Keyring.from_json(path.read_text())
    if not create:
        raise KeyringError(f"no keyring at {path} and none in MEDVAULT_KEYRING")
    keyring = Keyring.generate()
    if not write_private_file(path, keyring.to_json().encode(), exclusive=True):
        return Keyring.from_json(path.read_text())  # another process created it first
    return keyring
