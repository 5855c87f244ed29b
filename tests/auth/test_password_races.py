"""A password check that another login or a password change overtakes.

``check_password`` reads the user, checks the hash (0.1 s of argon2 in production),
then loads the user again to log them in. If the stored hash changed meanwhile, a new
password must not be accepted on the strength of the old one; but a concurrent login
that only rehashed the same password with newer parameters must not make this one fail.
It did: under the scale-out test (three instances, two logins of one account at once,
accounts made with the tests' cheap parameters) a correct portal login answered 401.
"""

from __future__ import annotations

from sqlalchemy import select

from medvault.audit.context import AuditContext
from medvault.audit.models import AuditEvent
from medvault.auth import repository
from medvault.auth.models import User
from medvault.auth.password_slots import PasswordCheckSlots
from medvault.auth.principal import Role
from medvault.auth.sessions import check_password
from medvault.runtime import Runtime
from tests.conftest import TEST_PASSWORD_HASHER
from tests.support.users import UserFactory

CONTEXT = AuditContext(
    actor_id="anonymous", actor_role="anonymous", client_ip=None, user_agent=None, request_id=None
)


def _check_while_the_hash_becomes(
    runtime: Runtime, username: str, password: str, new_hash: str
) -> User | None:
    with (
        runtime.auth.read_session() as reader,
        runtime.auth.session() as auth_session,
        runtime.clinical.session() as clinical_session,
    ):
        # The first read, as check_password's own: the old hash, held by the reader.
        stale = repository.user_by_username(reader, username)
        assert stale is not None
        old_hash = stale.password_hash
        with runtime.auth.session() as other:
            row = other.get(User, stale.id)
            assert row is not None
            row.password_hash = new_hash
            other.commit()
        assert new_hash != old_hash
        user = check_password(
            reader=reader,
            auth_session=auth_session,
            clinical_session=clinical_session,
            username=username,
            password=password,
            context=CONTEXT,
            password_slots=PasswordCheckSlots(2),
        )
        assert stale.password_hash == old_hash  # the check did start from the old one
        clinical_session.commit()
        return user


def test_a_login_overtaken_by_a_rehash_of_the_same_password_succeeds(
    runtime: Runtime, make_user: UserFactory
) -> None:
    made = make_user(Role.CLINICIAN)
    rehashed = TEST_PASSWORD_HASHER.hash(made.password)  # same password, new salt
    user = _check_while_the_hash_becomes(runtime, made.username, made.password, rehashed)
    assert user is not None
    assert user.password_hash == rehashed


def test_a_login_overtaken_by_a_password_change_fails_and_is_audited(
    runtime: Runtime, make_user: UserFactory
) -> None:
    made = make_user(Role.CLINICIAN)
    changed = TEST_PASSWORD_HASHER.hash("an entirely new passphrase")
    user = _check_while_the_hash_becomes(runtime, made.username, made.password, changed)
    assert user is None
    with runtime.clinical.session() as session:
        events = session.scalars(select(AuditEvent).where(AuditEvent.action == "auth.login")).all()
    assert [(e.outcome, e.details.get("reason")) for e in events] == [("failure", "wrong-password")]
