"""medvault: an encrypted, audited clinical document vault."""

__version__ = "0.1.0"
