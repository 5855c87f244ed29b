"""The allocator thresholds: megabyte buffers freed and allocated again stop faulting.

Run in a fresh interpreter each, so this test process's own allocator is left alone
and each side starts from glibc's defaults.
"""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

CHURN = """
import resource, sys, threading
from medvault.kit.allocator import keep_buffers_mapped

def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

if sys.argv[1] == "tuned":
    assert keep_buffers_mapped()
piece = b"x" * 65536

def stream() -> None:
    # 768 MiB through 1 MiB buffers on a worker thread, a few alive at a time, as a
    # download's joined plaintext pieces are.
    for _ in range(256):
        a, b, c = (b"".join([piece] * 16) for _ in range(3))
        del a, b, c

before = minor_faults()
worker = threading.Thread(target=stream)
worker.start()
worker.join()
print(minor_faults() - before)
"""


def faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True
    )
    return int(out.stdout)


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_tuned_allocator_reuses_megabyte_buffers() -> None:
    default, tuned = faults("default"), faults("tuned")
    # By default the thread's arena gives the freed megabytes back every round, so
    # their pages fault in again (measured: ~189,000 faults, 256 per buffer).
    assert default > 768 * 100
    assert tuned < default / 20
