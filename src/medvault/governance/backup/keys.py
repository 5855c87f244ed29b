"""``medvault backup keys``: the vault's key material, written apart from any backup.

Keys must not sit with the data they protect: a backup that carried its own keyring
would let anyone holding the backup read every document. So backups never contain
keys, and this writes them to a destination of their own (a secret manager's import
folder, an offline medium), under the names a data directory uses, so that a
restore only has to put them back (or set the matching ``MEDVAULT_*`` variables).

It is a separate command rather than an option of ``backup``: keys change rarely
(``keys rotate``) and belong to whoever holds the secret manager, while data backups
run nightly from cron. An option on the nightly command would invite writing both to
the same synced place every night.

The keys are written from what the vault loads (environment first, then files), in
the file formats the loaders read, so the written files open the same vault even
when production keeps its keys in the environment.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from medvault.config import Settings
from medvault.crypto.keyring import load_keyring
from medvault.crypto.secret_key import load_secret_key
from medvault.crypto.signing_keys import SigningKey, load_signing_key
from medvault.governance.backup.manifest import MANIFEST_NAME
from medvault.kit.private_files import make_private_dirs, write_private_file

KEYRING_NAME = "keyring.json"
SECRET_KEY_NAME = "secret.key"  # noqa: S105  # a file name, not a secret
JWT_KEY_NAME = "jwt-signing.pem"
AUDIT_KEY_NAME = "audit-signing.pem"


class KeyExportRefused(RuntimeError):
    """The destination is unsuitable (inside a backup, or already holding keys)."""


@dataclass(frozen=True)
class ExportedKeys:
    directory: Path
    files: list[str]
    kek_ids: list[str]
    audit_key_id: str


def _pem(key: SigningKey) -> bytes:
    return key.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _inside_backup(path: Path) -> Path | None:
    for node in (path, *path.parents):
        if (node / MANIFEST_NAME).is_file():
            return node
    return None


def export_keys(*, settings: Settings, destination: Path) -> ExportedKeys:
    """Write the keyring, link secret and both signing keys to ``destination`` (0600 files).

    Refuses a destination inside a backup directory, and one that already holds any of
    these files: an older keyring overwritten by a newer one could lose a KEK that
    older backups still need.
    """
    destination = destination.expanduser().resolve()
    holder = _inside_backup(destination)
    if holder is not None:
        raise KeyExportRefused(
            f"{destination} is inside the backup {holder}: keys must not sit with the data"
        )
    names = (KEYRING_NAME, SECRET_KEY_NAME, JWT_KEY_NAME, AUDIT_KEY_NAME)
    present = [name for name in names if (destination / name).exists()]
    if present:
        raise KeyExportRefused(f"{destination} already holds {', '.join(present)}")
    # create=False everywhere: exporting must never invent a key the vault does not use.
    keyring = load_keyring(env_value=settings.keyring, path=settings.keyring_path, create=False)
    secret = load_secret_key(
        env_value=settings.secret_key, path=settings.secret_key_path, create=False
    )
    jwt_key = load_signing_key(
        env_value=settings.jwt_private_key,
        path=settings.jwt_key_path,
        create=False,
        purpose="JWT signing",
    )
    audit_key = load_signing_key(
        env_value=settings.audit_signing_key,
        path=settings.audit_key_path,
        create=False,
        purpose="audit checkpoint signing",
    )
    make_private_dirs(destination)
    contents = {
        KEYRING_NAME: keyring.to_json().encode(),
        # The file holds base64 of the raw secret (crypto.secret_key reads it back so).
        SECRET_KEY_NAME: base64.b64encode(secret),
        JWT_KEY_NAME: _pem(jwt_key),
        AUDIT_KEY_NAME: _pem(audit_key),
    }
    for name, data in contents.items():
        write_private_file(destination / name, data, exclusive=True)
    return ExportedKeys(destination, list(contents), keyring.kek_ids, audit_key.key_id)
