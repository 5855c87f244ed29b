"""Fixtures for identity tests: a Redis for shared rate limits.

Users and logins (``make_user``, ``login``, ``bearer``) are shared by every package: the
fixture is in ``tests/conftest.py``, the helpers in ``tests/support/users.py``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.support.services import unavailable

REDIS_URL = os.environ.get("MEDVAULT_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_url() -> str:
    """The machine's real Redis (skipped locally if down, a failure under CI=true)."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        unavailable(f"Redis at {REDIS_URL} is not reachable: {exc}")
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    import redis

    prefix = f"medvault-test:{uuid.uuid4().hex}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
