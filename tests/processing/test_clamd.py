"""The clamd client against a real clamd: verdicts, streaming, and an outage."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medvault.processing.clamd import ClamdClient, ScannerError
from tests.support.clamd import BODY_SIGNATURE_NAME, EICAR, REPORTED_NAME, ClamdServer
from tests.support.services import free_port


def test_eicar_is_found_by_its_signature(clamd: ClamdServer) -> None:
    verdict = ClamdClient(clamd.address).scan([EICAR])
    # Both test signatures match the bare file; clamd names whichever it hit first.
    assert verdict.infected
    assert verdict.signature in {REPORTED_NAME, f"{BODY_SIGNATURE_NAME}.UNOFFICIAL"}
    assert verdict.engine.startswith("ClamAV ")


def test_a_clean_stream_of_many_chunks_is_clean(clamd: ClamdServer) -> None:
    chunks = (os.urandom(256 * 1024) for _ in range(40))  # 10 MiB, never held whole
    verdict = ClamdClient(clamd.address).scan(chunks)
    assert (verdict.infected, verdict.signature) == (False, None)


def test_eicar_split_across_chunks_is_still_found(clamd: ClamdServer) -> None:
    verdict = ClamdClient(clamd.address).scan([EICAR[:20], EICAR[20:50], EICAR[50:]])
    assert verdict.infected


def test_a_stopped_clamd_is_a_scanner_error_not_a_verdict(clamd: ClamdServer) -> None:
    client = ClamdClient(clamd.address, timeout=5)
    clamd.stop()
    try:
        assert client.ping() is False
        with pytest.raises(ScannerError, match="unreachable"):
            client.scan([b"hello"])
    finally:
        clamd.start()
    assert client.ping() is True


def test_nothing_listening_is_a_scanner_error() -> None:
    with pytest.raises(ScannerError):
        ClamdClient(f"tcp://127.0.0.1:{free_port()}", timeout=2).version()


@pytest.mark.parametrize("address", ["clamd:3310", "tcp://host", "unix://", "http://x:1"])
def test_a_malformed_address_is_refused(address: str) -> None:
    with pytest.raises(ValueError, match="clamd address"):
        ClamdClient(address)


def test_a_unix_socket_address_is_accepted(tmp_path: Path) -> None:
    client = ClamdClient(f"unix://{tmp_path / 'clamd.ctl'}", timeout=1)
    assert client.ping() is False
