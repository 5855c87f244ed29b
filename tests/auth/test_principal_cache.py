"""The principal cache: what a hit costs, when an entry ends, and how it fails safe."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, text

from medvault.app import create_app
from medvault.auth.jwt_tokens import decode_access_token
from medvault.auth.principal_cache import (
    EPOCH_POOL_SIZE,
    Expiring,
    PrincipalCache,
    credential_key,
)
from medvault.auth.repository import READ_AUTH_EPOCH_SQL
from medvault.auth.web_sessions import TOUCH_INTERVAL
from medvault.kit.clock import utcnow
from medvault.runtime import Runtime, build_runtime
from tests.support.backends import SettingsFactory
from tests.support.instances import (
    Credentials,
    Instance,
    credentials_for,
    is_credential_lookup,
    statements,
)
from tests.support.users import UserFactory

# -- the cache on its own: a fake epoch and a fake clock ------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cache_with(epoch: list[int | None], clock: Clock, **kwargs: int) -> PrincipalCache[str]:
    return PrincipalCache(ttl_seconds=10, epoch=lambda: epoch[0], monotonic=clock, **kwargs)


def counting(value: str | None, valid_until: datetime | None = None) -> tuple[
    Callable[[], Expiring[str] | None], list[int]
]:  # fmt: skip
    calls = [0]

    def load() -> Expiring[str] | None:
        calls[0] += 1
        return Expiring(value, valid_until) if value is not None else None

    return load, calls


def test_an_entry_lives_until_the_epoch_moves_or_the_ttl_ends() -> None:
    epoch: list[int | None] = [7]
    clock = Clock()
    cache = cache_with(epoch, clock)
    load, calls = counting("alice")
    assert [cache.resolve("k", load) for _ in range(3)] == ["alice"] * 3
    assert calls == [1]
    epoch[0] = 8  # a revocation committed somewhere
    assert cache.resolve("k", load) == "alice" and calls == [2]
    clock.now += 9.99
    assert cache.resolve("k", load) == "alice" and calls == [2]
    clock.now += 0.01  # the TTL is a hard bound too
    assert cache.resolve("k", load) == "alice" and calls == [3]


def test_nothing_is_cached_without_an_epoch_or_with_a_zero_ttl() -> None:
    clock = Clock()
    for cache in (
        cache_with([None], clock),
        PrincipalCache[str](ttl_seconds=0, epoch=lambda: pytest.fail("epoch read")),
    ):
        load, calls = counting("alice")
        assert [cache.resolve("k", load) for _ in range(3)] == ["alice"] * 3
        assert calls == [3] and len(cache) == 0


def test_refusals_and_ended_credentials_are_not_cached() -> None:
    cache = cache_with([1], Clock())
    refused, refusals = counting(None)
    assert cache.resolve("k", refused) is None and cache.resolve("k", refused) is None
    assert refusals == [2]
    ended, loads = counting("bob", valid_until=utcnow() - timedelta(microseconds=1))
    cache.resolve("j", ended)
    cache.resolve("j", ended)
    assert loads == [2]


def test_the_cache_is_bounded() -> None:
    cache = cache_with([1], Clock(), max_entries=3)
    for key in "abcde":
        cache.resolve(key, counting(key)[0])
    assert len(cache) == 3
    load, calls = counting("a")
    cache.resolve("a", load)  # the oldest went first
    assert calls == [1]


# -- in the app: statements counted on the real databases -------------------------------------


@pytest.fixture
def vault(runtime: Runtime, api_token: str) -> Iterator[Instance]:
    with TestClient(create_app(runtime=runtime), raise_server_exceptions=False) as client:
        yield Instance(runtime, client, api_token)


@pytest.fixture
def creds(vault: Instance, make_user: UserFactory) -> Credentials:
    return credentials_for(vault, make_user)


def requests(vault: Instance, creds: Credentials) -> list[Callable[[], int]]:
    return [
        lambda: vault.get_me(creds.access).status_code,
        lambda: vault.get_me(creds.api_token).status_code,
        lambda: vault.portal_page(creds.cookie).status_code,
    ]


def test_a_cached_principal_costs_one_epoch_read_and_no_lookup(
    vault: Instance, creds: Credentials
) -> None:
    epoch_engine = vault.runtime.principals.epoch.engine
    for request in requests(vault, creds):
        with statements(vault.runtime.auth.engine) as first:
            assert request() == 200
        assert [s for s in first if is_credential_lookup(s)]
        with statements(vault.runtime.auth.engine) as sent, statements(epoch_engine) as epoch:
            assert request() == 200
        assert sent == [] or not [s for s in sent if is_credential_lookup(s)], sent
        assert epoch == [READ_AUTH_EPOCH_SQL]
    # Every bearer request opens no auth-database session at all.
    with statements(vault.runtime.auth.engine) as sent:
        assert vault.get_me(creds.access).status_code == 200
        assert vault.get_me(creds.api_token).status_code == 200
    assert sent == []


def test_keys_are_digests_and_nothing_secret_is_logged(
    vault: Instance, creds: Credentials, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        for request in requests(vault, creds):
            request()
    caches = vault.runtime.principals
    keys = set(caches.bearer._entries) | set(caches.web._entries)
    assert credential_key("bearer", creds.access) in keys
    for secret in (creds.access, creds.api_token, creds.cookie, creds.refresh):
        assert not any(secret in key for key in keys)
        assert secret not in caplog.text


def _shift_clock(monkeypatch: pytest.MonkeyPatch, to: datetime) -> None:
    monkeypatch.setattr("medvault.auth.principal_cache.utcnow", lambda: to)


@pytest.mark.parametrize("kind", ["jwt", "portal"])
def test_no_entry_is_served_past_its_credentials_end(
    vault: Instance, creds: Credentials, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An entry ends at the exact instant the uncached path would refuse (or re-read)."""
    if kind == "jwt":
        claims = decode_access_token(key=vault.runtime.jwt_key, token=creds.access)
        assert claims is not None
        end = claims.valid_until  # exp + the decoder's clock-skew leeway
        request = requests(vault, creds)[0]
    else:
        request = requests(vault, creds)[2]
        assert request() == 200
        active = vault.runtime.principals.web.resolve(  # its cached resolution
            credential_key("web", creds.cookie), lambda: pytest.fail("not cached")
        )
        assert active is not None and active.valid_until is not None
        end = active.valid_until  # the next activity write is due (before the idle limit)
        assert end <= utcnow() + TOUCH_INTERVAL
    assert request() == 200
    _shift_clock(monkeypatch, end - timedelta(microseconds=1))
    with statements(vault.runtime.auth.engine) as sent:
        request()
    assert not [s for s in sent if is_credential_lookup(s)]
    _shift_clock(monkeypatch, end)
    with statements(vault.runtime.auth.engine) as sent:
        request()
    assert [s for s in sent if is_credential_lookup(s)]


def test_without_the_epoch_row_every_request_looks_up(vault: Instance, creds: Credentials) -> None:
    with vault.runtime.auth.engine.begin() as connection:
        connection.execute(text("DELETE FROM auth_epoch"))
    for request in requests(vault, creds):
        for _ in range(2):
            with statements(vault.runtime.auth.engine) as sent:
                assert request() == 200
            assert [s for s in sent if is_credential_lookup(s)]
    with vault.runtime.auth.engine.begin() as connection:
        connection.execute(text("INSERT INTO auth_epoch (id, value) VALUES (1, 0)"))


def test_zero_seconds_turns_the_cache_off(
    make_settings: SettingsFactory, runtime: Runtime, make_user: UserFactory, api_token: str
) -> None:
    off = build_runtime(make_settings(principal_cache_seconds=0))
    try:
        with (
            TestClient(create_app(runtime=off)) as client,
            statements(off.principals.epoch.engine) as epoch,
        ):
            vault = Instance(off, client, api_token)
            creds = credentials_for(vault, make_user)
            for request in requests(vault, creds):
                for _ in range(2):
                    with statements(off.auth.engine) as sent:
                        assert request() == 200
                    assert [s for s in sent if is_credential_lookup(s)]
        assert epoch == []
    finally:
        off.close()


def test_concurrent_requests_do_not_keep_opening_epoch_connections(
    vault: Instance, creds: Credentials
) -> None:
    """The epoch pool holds its connections: no overflow to close and reopen under load
    (a pool of 4 + 16 overflow opened a new connection for many requests)."""
    epoch_engine = vault.runtime.principals.epoch.engine
    opened = [0]

    def on_connect(*_args: object) -> None:
        opened[0] += 1

    event.listen(epoch_engine, "connect", on_connect)
    try:
        with ThreadPoolExecutor(max_workers=24) as pool:
            codes = list(
                pool.map(lambda _: vault.get_me(creds.api_token).status_code, range(24 * 25))
            )
    finally:
        event.remove(epoch_engine, "connect", on_connect)
    assert set(codes) == {200}
    assert opened[0] <= EPOCH_POOL_SIZE, opened[0]
