"""Environment for server-side CLI commands, so their ``Settings()`` match a test's."""

from __future__ import annotations

from medvault.config import Settings


def server_env(settings: Settings) -> dict[str, str]:
    """``MEDVAULT_*`` variables reproducing every explicitly set field of ``settings``."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump(exclude_unset=True).items():
        if value is None:
            continue
        text = ",".join(value) if isinstance(value, tuple) else str(value)
        env[f"MEDVAULT_{name.upper()}"] = text
    return env
