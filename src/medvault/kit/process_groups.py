"""Waiting until a killed process group is really gone (Linux ``/proc``).

``killpg(pgid, SIGKILL)`` only sends the signal: a member that was mid-write or held
much memory can still be exiting when the caller moves on, and an orphaned grandchild
(a tesseract whose parent was killed first) is nobody's child to ``wait`` for. Code that
promises "nothing it started is still running" waits here for the members to exit.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def members_alive(pgid: int) -> bool:
    """Whether a process other than a zombie is in process group ``pgid``."""
    try:
        entries = os.scandir("/proc")
    except FileNotFoundError:  # not Linux: nothing to look at
        return False
    with entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_bytes()
            except OSError:  # exited meanwhile
                continue
            # The command name may hold spaces and parentheses: fields follow the last ")".
            state, _ppid, pgrp = stat[stat.rindex(b")") + 2 :].split()[:3]
            if int(pgrp) == pgid and state not in (b"Z", b"X"):
                return True
    return False


def wait_for_group_exit(pgid: int, *, timeout: float = 2.0, poll: float = 0.005) -> bool:
    """Wait until every member of ``pgid`` has exited (zombies count as exited);
    returns whether they did within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while members_alive(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)
    return True
