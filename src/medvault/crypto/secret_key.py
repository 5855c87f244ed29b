"""The vault's signing secret (for signed download URLs)."""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from medvault.crypto.errors import KeyringError

SECRET_BYTES = 32


def load_secret_key(*, env_value: str | None, path: Path, create: bool) -> bytes:
    if env_value:
        return env_value.encode()
    if path.exists():
        if path.stat().st_mode & 0o077:
            raise KeyringError(f"{path} is readable by other users; chmod 600 it")
        return base64.b64decode(path.read_text().strip())
    if not create:
        raise KeyringError(f"no secret key at {path} and none in MEDVAULT_SECRET_KEY")
    key = secrets.token_bytes(SECRET_BYTES)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another process created it first (two instances starting together): use theirs.
        return base64.b64decode(path.read_text().strip())
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.b64encode(key).decode())
        handle.flush()
        os.fsync(handle.fileno())
    return key
