"""Files the vault writes are owner-only: 0600 files, 0700 directories.

Everything in the data folder is either a secret (keys, password and token hashes)
or clinical data, so modes are set explicitly at creation rather than left to the
umask: a data folder that an operator made 0755 must not turn ``auth.db`` into a
file every local user can read.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_private_dirs(path: Path) -> None:
    """``mkdir -p`` in which every directory created is 0700 (``Path.mkdir``'s ``mode``
    only applies to the last one). Existing directories are left as they are."""
    missing: list[Path] = []
    node = path
    while not node.exists():
        missing.append(node)
        if node.parent == node:
            break
        node = node.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:
            continue  # another process made it first
        directory.chmod(PRIVATE_DIR_MODE)  # the umask may have taken bits away


def ensure_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (e.g. before SQLite opens it:
    SQLite creates its database with 0644 and gives ``-wal``/``-shm`` the same mode)."""
    make_private_dirs(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        return
    os.close(fd)


def exposure_warning(path: Path) -> str | None:
    """Why ``path`` (the data folder) is readable by others, or None if it is not."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    if not mode & (stat.S_IRWXG | stat.S_IRWXO):
        return None
    return (
        f"the data folder {path} has mode {stat.S_IMODE(mode):04o}: other local users can "
        "list it. Files medvault creates are owner-only, but run `chmod 700` on it."
    )


def write_private_file(path: Path, data: bytes, *, exclusive: bool) -> bool:
    """Write ``data`` to ``path`` so no reader ever sees a partial file.

    With ``exclusive``, an existing file wins and False is returned: two processes
    starting together on a fresh data dir then agree on the first one's secret instead
    of each keeping its own.
    """
    make_private_dirs(path.parent)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            finally:
                tmp.unlink(missing_ok=True)
        else:
            tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return True
