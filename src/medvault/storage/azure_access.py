"""How to reach an Azure storage account, apart from the Azure SDK itself.

A module of its own so that settings can be turned into it without importing the SDK
(over a second of start-up), which only vaults on ``azure://`` storage load.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AzureAccess:
    """How to reach the storage account: a connection string, or an account URL with
    an account key, a SAS token, or neither (then ``DefaultAzureCredential``: managed
    identity, workload identity, environment; needs the ``azure-identity`` package)."""

    connection_string: str | None = None
    account_url: str | None = None
    account_key: str | None = None
    sas_token: str | None = None

    def __repr__(self) -> str:
        # Settings objects and tracebacks print their fields: never the secrets.
        return f"AzureAccess(account_url={self.account_url!r}, secrets=<hidden>)"
