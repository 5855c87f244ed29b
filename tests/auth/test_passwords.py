"""Password hashing at its real cost: argon2id with RFC 9106's low-memory parameters.

Every other test hashes with the cheapest parameters (tests/conftest.py); these check
what the vault itself uses, and that a hash made with other parameters is upgraded.
"""

from __future__ import annotations

import pytest

from medvault.auth import passwords
from tests.conftest import TEST_PASSWORD_HASHER

pytestmark = pytest.mark.real_password_hashing


def test_the_vault_hashes_with_argon2id_at_rfc_9106_cost() -> None:
    assert passwords._hasher is not TEST_PASSWORD_HASHER
    stored = passwords.hash_password("correct horse battery")
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert passwords.verify_password(stored, "correct horse battery")
    assert not passwords.verify_password(stored, "correct horse battery!")
    assert not passwords.needs_rehash(stored)


def test_a_cheaper_hash_verifies_but_asks_to_be_upgraded() -> None:
    cheap = TEST_PASSWORD_HASHER.hash("correct horse battery")
    assert passwords.verify_password(cheap, "correct horse battery")
    assert passwords.needs_rehash(cheap)


def test_no_user_still_costs_a_real_check() -> None:
    # The dummy hash an unknown username is checked against has the real parameters,
    # so "no such user" takes as long as "wrong password".
    assert passwords._DUMMY_HASH.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert not passwords.verify_password(None, "anything at all")


def test_short_passwords_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 12 characters"):
        passwords.hash_password("too-short")
