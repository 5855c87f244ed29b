"""The vault's signing secret (for signed download URLs)."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

from medvault.crypto.errors import KeyringError
from medvault.kit.private_files import write_private_file

SECRET_BYTES = 32


def _decode(path: Path) -> bytes:
    try:
        key = base64.b64decode(path.read_text().strip(), validate=True)
    except ValueError:
        key = b""
    if len(key) < SECRET_BYTES:
        # An empty or short key would let anyone forge signed links: refuse to start.
        raise KeyringError(f"{path} is damaged; restore it from backup or remove it")
    return key


def load_secret_key(*, env_value: str | None, path: Path, create: bool) -> bytes:
    if env_value:
        return env_value.encode()
    if path.exists():
        if path.stat().st_mode & 0o077:
            raise KeyringError(f"{path} is readable by other users; chmod 600 it")
        return _decode(path)
    if not create:
        raise KeyringError(f"no secret key at {path} and none in MEDVAULT_SECRET_KEY")
    key = secrets.token_bytes(SECRET_BYTES)
    if not write_private_file(path, base64.b64encode(key), exclusive=True):
        return _decode(path)  # another process created it first
    return key
