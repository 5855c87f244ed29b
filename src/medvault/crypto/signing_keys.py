"""Ed25519 signing keys (JWT access tokens, audit checkpoints), with stable key ids."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from medvault.crypto.errors import KeyringError
from medvault.kit.private_files import write_private_file


@dataclass(frozen=True)
class SigningKey:
    private_key: Ed25519PrivateKey
    key_id: str

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def public_pem(self) -> str:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()


def key_id_for(public_key: Ed25519PublicKey) -> str:
    """A short, stable id derived from the public key (RFC 7638-style thumbprint idea)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.urlsafe_b64encode(hashlib.sha256(raw).digest()[:12]).decode().rstrip("=")


def _parse(pem: bytes, where: str) -> SigningKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyringError(f"{where} is not a PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyringError(f"{where} must be an Ed25519 private key")
    return SigningKey(private_key=key, key_id=key_id_for(key.public_key()))


def generate_pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_signing_key(
    *, env_value: str | None, path: Path, create: bool, purpose: str
) -> SigningKey:
    """The key from the environment if given, else from its file (made on first start)."""
    if env_value:
        return _parse(env_value.encode(), f"the {purpose} key from the environment")
    if path.exists():
        if path.stat().st_mode & 0o077:
            raise KeyringError(f"{path} is readable by other users; chmod 600 it")
        return _parse(path.read_bytes(), str(path))
    if not create:
        raise KeyringError(f"no {purpose} key at {path}")
    pem = generate_pem()
    if not write_private_file(path, pem, exclusive=True):
        return _parse(path.read_bytes(), str(path))  # another process created it first
    return _parse(pem, str(path))
