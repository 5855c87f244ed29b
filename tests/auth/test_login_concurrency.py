"""Parallel logins against a real server: the rate limit holds, hashing is bounded.

Issue 9, defect 4. Before the fix, 16 parallel wrong passwords for one account were
all verified (each an argon2id computation of 64 MiB) because the limiter only
*tested* before verifying and counted afterwards; and 24 parallel anonymous logins
ran 24 hashes at once. These tests send real concurrent HTTP requests (uvicorn in a
thread) and read the password-slot counters rather than timing anything.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest
from fastapi import FastAPI

from medvault.auth.password_slots import PasswordCheckSlots
from medvault.auth.principal import Role
from medvault.auth.ratelimit import RateLimits
from medvault.runtime import Runtime
from medvault.web.session import LOGIN_CSRF_COOKIE
from tests.support.live_server import LiveServer
from tests.support.users import UserFactory

# Concurrency needs checks that take as long as real ones: cheap test hashes would
# finish before the next request arrives.
pytestmark = pytest.mark.real_password_hashing

WRONG = "certainly-not-the-password"
LOGIN_BUSY = "urn:medvault:problem:login-busy"
RATE_LIMITED = "urn:medvault:problem:rate-limited"


@pytest.fixture
def limits(app: FastAPI, runtime: Runtime) -> Iterator[RateLimits]:
    settings = runtime.settings.model_copy(
        update={
            "login_rate_limit_account": "5/minute",
            "login_rate_limit_ip": "1000/minute",
            "max_concurrent_password_checks": 2,
        }
    )
    installed = RateLimits.from_settings(settings)
    app.state.rate_limits = installed
    yield installed
    installed.reset()


@pytest.fixture
def server(app: FastAPI) -> Iterator[LiveServer]:
    with LiveServer(app) as live:
        yield live


def parallel_logins(url: str, credentials: Sequence[tuple[str, str]]) -> list[httpx.Response]:
    """POST every login at once (a barrier releases them together), one connection each."""
    barrier = threading.Barrier(len(credentials))

    def one(pair: tuple[str, str]) -> httpx.Response:
        with httpx.Client(base_url=url, timeout=120) as client:
            barrier.wait()
            return client.post(
                "/api/v1/auth/token",
                data={"username": pair[0], "password": pair[1], "grant_type": "password"},
            )

    with ThreadPoolExecutor(len(credentials)) as pool:
        return list(pool.map(one, credentials))


def parallel_portal_logins(url: str, username: str, count: int) -> list[httpx.Response]:
    barrier = threading.Barrier(count)

    def one(_: int) -> httpx.Response:
        with httpx.Client(base_url=url, timeout=120) as client:
            client.get("/login")
            token = client.cookies.get(LOGIN_CSRF_COOKIE) or ""
            barrier.wait()
            return client.post(
                "/login",
                data={"username": username, "password": WRONG, "csrf_token": token},
                follow_redirects=False,
            )

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def test_parallel_guesses_at_one_account_are_counted_before_checking(
    limits: RateLimits, server: LiveServer, make_user: UserFactory
) -> None:
    victim = make_user(Role.CLINICIAN)
    slots = limits.password_slots
    slots.wait_seconds = 60  # every admitted guess gets checked: this test is about counting
    checks_before = slots.checks

    responses = parallel_logins(server.url, [(victim.username, WRONG)] * 16)

    statuses = sorted(r.status_code for r in responses)
    assert statuses == [401] * 5 + [429] * 11, statuses
    assert slots.checks - checks_before == 5  # eleven guesses never reached argon2
    for refused in (r for r in responses if r.status_code == 429):
        assert refused.json()["type"] == RATE_LIMITED
        assert int(refused.headers["retry-after"]) >= 1
    # The lock holds for the right password too.
    late = parallel_logins(server.url, [(victim.username, victim.password)])[0]
    assert late.status_code == 429


def test_parallel_portal_guesses_are_counted_before_checking(
    limits: RateLimits, server: LiveServer, make_user: UserFactory
) -> None:
    victim = make_user(Role.CLINICIAN)
    slots = limits.password_slots
    slots.wait_seconds = 60
    checks_before = slots.checks

    responses = parallel_portal_logins(server.url, victim.username, 10)

    assert sorted(r.status_code for r in responses) == [401] * 5 + [429] * 5
    assert slots.checks - checks_before == 5


def _rss_mib() -> float:
    return float(psutil.Process().memory_info().rss) / 2**20


def test_concurrent_hashing_is_bounded_and_answers_busy(
    limits: RateLimits, server: LiveServer, make_user: UserFactory
) -> None:
    slots: PasswordCheckSlots = limits.password_slots
    assert slots.size == 2
    # Known accounts with wrong passwords and unknown usernames, mixed: they must take
    # the same path (a slot, then a hash) and get the same answers.
    known = [(make_user(Role.CLINICIAN).username, WRONG) for _ in range(12)]
    unknown = [(f"nobody-{n}", WRONG) for n in range(12)]
    credentials = [pair for pairs in zip(known, unknown, strict=True) for pair in pairs]

    # 1. Every slot is taken (held here): all 24 are refused, quickly, with Retry-After.
    slots.wait_seconds = 0.2
    checks_before = slots.checks
    with slots.slot(), slots.slot():
        busy = parallel_logins(server.url, credentials)
    assert [r.status_code for r in busy] == [503] * 24
    for response in busy:
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"] == LOGIN_BUSY
        assert response.headers["retry-after"] == "1"
    assert slots.checks - checks_before == 2  # only this test's own two slots

    # 2. Slots free, 24 at once: all are checked, never more than two at a time.
    limits.reset()  # the attempts above counted; start the windows afresh
    slots.wait_seconds = 120
    slots.peak = 0
    rss_before = _rss_mib()
    checked = parallel_logins(server.url, credentials)
    rss_growth = _rss_mib() - rss_before
    assert [r.status_code for r in checked] == [401] * 24
    assert {r.json()["type"] for r in checked} == {"urn:medvault:problem:unauthorized"}
    assert slots.peak <= 2
    assert slots.in_use == 0
    print(f"\n24 parallel logins with 2 slots: RSS grew by {rss_growth:.1f} MiB")
