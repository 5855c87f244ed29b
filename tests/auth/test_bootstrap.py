"""First start: exactly one admin, whose generated password is handed back once."""

from __future__ import annotations

import dataclasses
import threading

import pytest
from fastapi.testclient import TestClient

from medvault.auth import users
from medvault.auth.bootstrap import ensure_first_admin
from medvault.auth.passwords import verify_password
from medvault.auth.principal import Role
from medvault.config import ConfigurationError
from medvault.runtime import Runtime
from tests.support.inspect import audit_rows
from tests.support.users import UserFactory, login


def with_password(runtime: Runtime, password: str | None) -> Runtime:
    settings = runtime.settings.model_copy(update={"bootstrap_admin_password": password})
    return dataclasses.replace(runtime, settings=settings)


def admins(runtime: Runtime) -> list[str]:
    with runtime.auth.read_session() as session:
        return [u.username for u in users.list_users(session=session, role=Role.ADMIN)]


def test_generated_password(runtime: Runtime, anon_client: TestClient) -> None:
    password = ensure_first_admin(runtime)
    assert password is not None and len(password) >= 20
    assert admins(runtime) == ["admin"]
    assert login(anon_client, "admin", password).status_code == 200
    assert ensure_first_admin(runtime) is None  # idempotent
    assert admins(runtime) == ["admin"]
    (event,) = audit_rows(runtime, "user.create")
    assert event.actor_id == "system:bootstrap"
    assert password not in repr(event.details)


def test_password_from_the_environment(runtime: Runtime, anon_client: TestClient) -> None:
    configured = with_password(runtime, "operator-chosen-passphrase")
    assert ensure_first_admin(configured) is None  # nothing to show: the operator knows it
    assert login(anon_client, "admin", "operator-chosen-passphrase").status_code == 200


def test_short_configured_password_is_refused(runtime: Runtime) -> None:
    with pytest.raises(ConfigurationError, match="at least 12"):
        ensure_first_admin(with_password(runtime, "short"))
    assert admins(runtime) == []


def test_existing_users_mean_no_bootstrap(runtime: Runtime, make_user: UserFactory) -> None:
    make_user(Role.CLINICIAN)
    assert ensure_first_admin(runtime) is None
    assert admins(runtime) == []


def test_instances_starting_together_make_one_admin(runtime: Runtime) -> None:
    results: list[str | None] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        try:
            barrier.wait()
            results.append(ensure_first_admin(runtime))
        except BaseException as exc:  # reported below, with the thread's traceback
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert admins(runtime) == ["admin"]
    assert len([r for r in results if r is not None]) == 1
    assert len(audit_rows(runtime, "user.create")) == 1


def test_outside_production_an_empty_vault_also_gets_a_clinician(runtime: Runtime) -> None:
    from medvault.auth import repository
    from medvault.auth.bootstrap import ensure_first_clinician

    password = ensure_first_clinician(runtime)
    assert password is not None and len(password) >= 20
    assert ensure_first_clinician(runtime) is None  # one is enough
    with runtime.auth.read_session() as session:
        clinicians = repository.list_users(session, role="clinician")
        assert [c.username for c in clinicians] == ["clinician"]
        assert verify_password(clinicians[0].password_hash, password)


def test_production_creates_no_clinician(runtime: Runtime) -> None:
    from medvault.auth.bootstrap import ensure_first_clinician

    settings = runtime.settings.model_copy(update={"env": "production"})
    production = dataclasses.replace(runtime, settings=settings)
    assert ensure_first_clinician(production) is None
