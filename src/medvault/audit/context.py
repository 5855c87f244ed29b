"""What every audit event records about the request that caused it."""

from __future__ import annotations

from dataclasses import dataclass

from medvault.auth.principal import Principal


@dataclass(frozen=True)
class AuditContext:
    actor_id: str
    actor_role: str
    client_ip: str | None
    user_agent: str | None
    request_id: str | None
    break_glass_reason: str | None = None

    @classmethod
    def for_principal(
        cls,
        principal: Principal,
        *,
        client_ip: str | None,
        user_agent: str | None,
        request_id: str | None,
    ) -> AuditContext:
        return cls(
            actor_id=principal.actor_id,
            actor_role=principal.role.value,
            client_ip=client_ip,
            user_agent=(user_agent or "")[:512] or None,
            request_id=request_id,
            break_glass_reason=principal.break_glass_reason,
        )

    @classmethod
    def system(cls, actor: str) -> AuditContext:
        """For work done by the vault itself or an operator's CLI command."""
        return cls(
            actor_id=f"system:{actor}",
            actor_role="system",
            client_ip=None,
            user_agent=None,
            request_id=None,
        )
