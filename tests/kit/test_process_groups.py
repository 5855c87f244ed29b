"""Waiting for a killed process group, with real processes (no fakes of /proc)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from medvault.kit.process_groups import members_alive, wait_for_group_exit


def _group_with_an_orphan() -> subprocess.Popen[bytes]:
    # The shell starts a background sleep and then sleeps itself: once the shell is
    # killed, the background sleep is an orphan that nobody here can wait for.
    return subprocess.Popen(["sh", "-c", "sleep 30 & exec sleep 30"], start_new_session=True)


def test_a_group_is_alive_until_its_members_have_exited() -> None:
    leader = _group_with_an_orphan()
    try:
        time.sleep(0.2)
        assert members_alive(leader.pid)
        os.killpg(leader.pid, signal.SIGKILL)
        assert wait_for_group_exit(leader.pid, timeout=5)
        assert not members_alive(leader.pid)
    finally:
        leader.kill()
        leader.wait()


def test_a_live_group_is_waited_for_no_longer_than_the_timeout() -> None:
    leader = _group_with_an_orphan()
    try:
        time.sleep(0.2)
        started = time.monotonic()
        assert not wait_for_group_exit(leader.pid, timeout=0.3)
        assert time.monotonic() - started < 5
        assert members_alive(leader.pid)
    finally:
        os.killpg(leader.pid, signal.SIGKILL)
        leader.wait()
    assert wait_for_group_exit(leader.pid, timeout=5)


def test_a_group_id_no_process_has_is_not_alive() -> None:
    # Above any pid_max Linux allows (2**22), so no process can be in this group.
    assert not members_alive(2**31 - 1)
    assert wait_for_group_exit(2**31 - 1, timeout=0)
