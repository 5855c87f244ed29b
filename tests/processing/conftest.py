"""A real clamd for the scanning tests (fails in CI when clamd is not installed)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.clamd import ClamdServer, clamd_binary, running_clamd
from tests.support.services import unavailable


@pytest.fixture(scope="module")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClamdServer]:
    if clamd_binary() is None:
        unavailable("clamd is not installed (apt-get install clamav-daemon)")
    with running_clamd(tmp_path_factory.mktemp("clamd")) as server:
        yield server
