"""Failed-login and upload rate limits, in process memory and in the machine's Redis."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from medvault.auth.principal import Role
from medvault.auth.ratelimit import RateLimits
from medvault.deps import UploadRateLimit
from medvault.runtime import Runtime
from tests.support.factories import create_patient, pdf_bytes, upload_raw
from tests.support.inspect import stored_state
from tests.support.users import UserFactory, bearer, login

WRONG = "certainly-not-the-password"
RATE_LIMITED = "urn:medvault:problem:rate-limited"

Install = Callable[..., RateLimits]


@pytest.fixture(params=["memory", "redis"])
def install_limits(
    request: pytest.FixtureRequest, app: FastAPI, runtime: Runtime
) -> Iterator[Install]:
    """Give the app a limiter with the given limits, in memory or in the real Redis."""
    made: list[RateLimits] = []
    prefix = "unused"
    redis_url: str | None = None
    if request.param == "redis":
        redis_url = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("redis_prefix")

    def install(**limits: str) -> RateLimits:
        settings = runtime.settings.model_copy(update={"redis_url": redis_url, **limits})
        rate_limits = RateLimits.from_settings(settings, key_prefix=prefix)
        app.state.rate_limits = rate_limits
        made.append(rate_limits)
        return rate_limits

    yield install
    for rate_limits in made:
        rate_limits.reset()


def assert_rate_limited(response: httpx.Response, *, at_most: int) -> int:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == RATE_LIMITED
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= at_most
    return retry_after


def test_failed_logins_per_account(
    install_limits: Install, anon_client: TestClient, make_user: UserFactory
) -> None:
    install_limits(login_rate_limit_account="3/minute", login_rate_limit_ip="100/minute")
    victim, bystander = make_user(Role.CLINICIAN), make_user(Role.CLINICIAN)
    for _ in range(3):
        assert login(anon_client, victim.username, WRONG).status_code == 401
    # Over the limit: refused even with the right password, so a late guess learns nothing.
    assert_rate_limited(login(anon_client, victim.username, victim.password), at_most=60)
    assert_rate_limited(login(anon_client, victim.username.upper(), WRONG), at_most=60)
    # Other accounts from the same address are unaffected.
    assert login(anon_client, bystander.username, bystander.password).status_code == 200


def test_failed_logins_per_address(
    install_limits: Install, anon_client: TestClient, make_user: UserFactory
) -> None:
    install_limits(login_rate_limit_account="100/minute", login_rate_limit_ip="4/minute")
    users = [make_user(Role.CLINICIAN) for _ in range(3)]
    for user in users[:2]:
        for _ in range(2):
            assert login(anon_client, user.username, WRONG).status_code == 401
    # Spraying over many accounts trips the per-address limit, for every account.
    assert_rate_limited(login(anon_client, users[2].username, users[2].password), at_most=60)
    assert_rate_limited(login(anon_client, "nobody-at-all", WRONG), at_most=60)


def test_the_window_passes_and_success_forgets_the_account(
    install_limits: Install, anon_client: TestClient, make_user: UserFactory
) -> None:
    # Attempts are counted when they start, so the window must outlast two argon2
    # checks on a loaded machine: 5 s, not 1 s.
    install_limits(login_rate_limit_account="2 per 5 seconds", login_rate_limit_ip="100/minute")
    user = make_user(Role.CLINICIAN)
    assert login(anon_client, user.username, WRONG).status_code == 401
    assert login(anon_client, user.username, WRONG).status_code == 401
    assert_rate_limited(login(anon_client, user.username, user.password), at_most=5)
    time.sleep(5.2)
    assert login(anon_client, user.username, WRONG).status_code == 401
    assert login(anon_client, user.username, user.password).status_code == 200
    # The success cleared the account's count: two more typos are allowed again.
    assert login(anon_client, user.username, WRONG).status_code == 401
    assert login(anon_client, user.username, WRONG).status_code == 401
    assert login(anon_client, user.username, user.password).status_code == 429


def test_redis_holds_only_hashed_usernames(
    app: FastAPI,
    runtime: Runtime,
    anon_client: TestClient,
    redis_url: str,
    redis_prefix: str,
) -> None:
    import redis

    settings = runtime.settings.model_copy(update={"redis_url": redis_url})
    app.state.rate_limits = RateLimits.from_settings(settings, key_prefix=redis_prefix)
    typed = "hunter2-typed-into-the-username-field"
    assert login(anon_client, typed, WRONG).status_code == 401
    # decode_responses makes every key a str; redis's types cannot tell, hence the check.
    stored = redis.Redis.from_url(redis_url, decode_responses=True).keys(f"{redis_prefix}*")
    keys = [key for key in stored if isinstance(key, str)]
    assert len(keys) == len(stored)
    assert len(keys) == 2
    assert not any("hunter2" in key for key in keys)
    assert any(hashlib.sha256(typed.encode()).hexdigest()[:32] in key for key in keys)


def test_default_limits_from_settings(anon_client: TestClient, make_user: UserFactory) -> None:
    """Without any wiring the app makes a per-process limiter from the settings (5/minute)."""
    user = make_user(Role.CLINICIAN)
    for _ in range(5):
        assert login(anon_client, user.username, WRONG).status_code == 401
    assert_rate_limited(login(anon_client, user.username, user.password), at_most=60)


def test_logins_fail_closed_when_redis_is_down(
    app: FastAPI, runtime: Runtime, anon_client: TestClient, make_user: UserFactory
) -> None:
    settings = runtime.settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    app.state.rate_limits = RateLimits.from_settings(settings)
    user = make_user(Role.CLINICIAN)
    response = login(anon_client, user.username, user.password)
    assert response.status_code == 503
    assert response.json()["type"] == "urn:medvault:problem:service-unavailable"


@pytest.fixture
def upload_probe(app: FastAPI) -> FastAPI:
    """A stand-in upload route guarded exactly as the real ones are to be."""

    @app.post("/test/upload-probe", status_code=201)
    def probe(_: UploadRateLimit) -> dict[str, bool]:
        return {"stored": True}

    return app


def test_uploads_per_principal(
    install_limits: Install,
    upload_probe: FastAPI,
    client: TestClient,
    anon_client: TestClient,
    make_user: UserFactory,
) -> None:
    install_limits(upload_rate_limit="2/minute")
    for _ in range(2):
        assert client.post("/test/upload-probe").status_code == 201
    assert_rate_limited(client.post("/test/upload-probe"), at_most=60)
    # Another principal has its own allowance.
    user = make_user(Role.CLINICIAN)
    access = login(anon_client, user.username, user.password).json()["access_token"]
    assert anon_client.post("/test/upload-probe", headers=bearer(access)).status_code == 201
    # Unauthenticated requests are refused before they count against anyone.
    assert anon_client.post("/test/upload-probe").status_code == 401


def test_uploads_fail_open_when_redis_is_down(
    app: FastAPI, upload_probe: FastAPI, runtime: Runtime, client: TestClient
) -> None:
    settings = runtime.settings.model_copy(
        update={"redis_url": "redis://127.0.0.1:1/0", "upload_rate_limit": "1/minute"}
    )
    app.state.rate_limits = RateLimits.from_settings(settings)
    for _ in range(3):
        assert client.post("/test/upload-probe").status_code == 201


def test_the_real_upload_routes_are_limited_per_principal(
    install_limits: Install, client: TestClient, runtime: Runtime
) -> None:
    install_limits(upload_rate_limit="2/minute")
    patient = create_patient(client)
    for _ in range(2):
        assert upload_raw(client, patient, pdf_bytes()).status_code == 201
    before = stored_state(runtime)
    limited = upload_raw(client, patient, pdf_bytes())
    assert_rate_limited(limited, at_most=60)
    document = client.get("/api/v1/documents").json()["items"][0]["id"]
    version = client.post(
        f"/api/v1/documents/{document}/versions",
        content=pdf_bytes(),
        headers={"content-type": "application/pdf"},
    )
    assert_rate_limited(version, at_most=60)
    assert stored_state(runtime) == before


def test_server_processes_without_redis_each_enforce_a_share(runtime: Runtime) -> None:
    # `serve --workers 3` without Redis: three processes, three sets of counters.
    # Each allows a third (rounded up), so together they never allow much more than
    # the configured limit however the kernel spreads a client's connections.
    settings = runtime.settings.model_copy(
        update={
            "redis_url": None,
            "login_rate_limit_account": "5/minute",
            "login_rate_limit_ip": "30/minute",
            "upload_rate_limit": "600/minute",
        }
    )
    shared = RateLimits.from_settings(settings, processes=3)
    assert (shared.login_account.amount, shared.login_ip.amount, shared.upload.amount) == (
        2,
        10,
        200,
    )
    assert shared.login_account.get_expiry() == 60
    one = RateLimits.from_settings(settings, processes=1)
    assert (one.login_account.amount, one.upload.amount) == (5, 600)


def test_server_processes_with_redis_share_the_whole_limit(
    runtime: Runtime, redis_url: str, redis_prefix: str
) -> None:
    # Redis counts for every process and host at once: no share is needed.
    settings = runtime.settings.model_copy(
        update={"redis_url": redis_url, "login_rate_limit_account": "5/minute"}
    )
    limits = RateLimits.from_settings(settings, key_prefix=redis_prefix, processes=3)
    try:
        assert limits.login_account.amount == 5
    finally:
        limits.reset()
