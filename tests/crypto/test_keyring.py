"""KEK keyring: generation on first start, file permissions, env override, wrapping."""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

import pytest

from medvault.crypto.errors import IntegrityError, KeyringError, UnknownKekError
from medvault.crypto.keyring import Keyring, WrappedDek, load_keyring, new_dek


def test_first_start_creates_a_private_keyring(tmp_path: Path) -> None:
    path = tmp_path / "data" / "keyring.json"
    keyring = load_keyring(env_value=None, path=path, create=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_keyring(env_value=None, path=path, create=False)
    assert again.active_id == keyring.active_id
    assert again.active.key == keyring.active.key


def test_missing_keyring_is_an_error_when_creation_is_not_allowed(tmp_path: Path) -> None:
    with pytest.raises(KeyringError):
        load_keyring(env_value=None, path=tmp_path / "nope.json", create=False)


def test_group_readable_keyring_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    load_keyring(env_value=None, path=path, create=True)
    path.chmod(0o644)
    with pytest.raises(KeyringError, match="chmod 600"):
        load_keyring(env_value=None, path=path, create=False)


def test_environment_keyring_wins_and_writes_nothing(tmp_path: Path) -> None:
    provided = Keyring.generate()
    path = tmp_path / "keyring.json"
    loaded = load_keyring(env_value=provided.to_json(), path=path, create=True)
    assert loaded.active_id == provided.active_id
    assert not path.exists()


def test_malformed_keyring_json_is_rejected() -> None:
    with pytest.raises(KeyringError):
        Keyring.from_json('{"active": "x", "keys": [{"id": "x", "key": "not base64!"}]}')


def test_wrapped_dek_is_bound_to_its_version() -> None:
    keyring = Keyring.generate()
    dek, version = new_dek(), uuid.uuid4()
    wrapped = keyring.wrap_dek(dek, version_id=version)
    assert keyring.unwrap_dek(wrapped, version_id=version) == dek
    with pytest.raises(IntegrityError):
        keyring.unwrap_dek(wrapped, version_id=uuid.uuid4())


def test_rotation_keeps_old_keys_and_rewraps_under_the_new_one() -> None:
    old = Keyring.generate()
    dek, version = new_dek(), uuid.uuid4()
    wrapped = old.wrap_dek(dek, version_id=version)
    rotated = old.with_new_active_kek()
    assert rotated.active_id != old.active_id
    assert set(rotated.kek_ids) == {old.active_id, rotated.active_id}
    rewrapped = rotated.rewrap(wrapped, version_id=version)
    assert rewrapped.kek_id == rotated.active_id
    assert rotated.unwrap_dek(rewrapped, version_id=version) == dek
    assert rotated.unwrap_dek(wrapped, version_id=version) == dek


def test_unknown_kek_is_reported() -> None:
    with pytest.raises(UnknownKekError):
        Keyring.generate().unwrap_dek(WrappedDek("kek-gone", b"x" * 60), version_id=uuid.uuid4())
