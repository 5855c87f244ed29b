"""Errors raised by the crypto layer."""


class CryptoError(Exception):
    """Base class for crypto failures."""


class IntegrityError(CryptoError):
    """Ciphertext failed authentication: it was altered, truncated, reordered or swapped."""


class UnknownKekError(CryptoError):
    """A wrapped key names a KEK that this keyring does not hold."""


class KeyringError(CryptoError):
    """The keyring is missing, malformed or cannot be written."""
