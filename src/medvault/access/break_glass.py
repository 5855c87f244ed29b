"""Break-glass: emergency access beyond a caller's normal scope, always with a reason.

The reason travels in the ``X-Break-Glass-Reason`` header of each request that needs
it, so the widening lasts exactly one request and every audit event of that request
carries the reason for later review.
"""

from __future__ import annotations

import unicodedata
from dataclasses import replace

from medvault.access.denials import Denial, denied
from medvault.access.policy import can_break_glass
from medvault.auth.principal import Principal
from medvault.kit.i18n import msg
from medvault.kit.problems import Forbidden, ValidationFailed

HEADER = "X-Break-Glass-Reason"
MIN_REASON = 10
MAX_REASON = 500


def apply_break_glass(principal: Principal, header_value: str | None) -> Principal:
    """The principal for this request: widened if it declared a valid emergency."""
    if header_value is None or not header_value.strip():
        return principal
    reason = "".join(ch for ch in header_value if unicodedata.category(ch)[0] != "C").strip()
    if not can_break_glass(principal):
        problem = Forbidden(
            msg("Your role ({role}) cannot use break-glass.", role=principal.role.value)
        )
        raise denied(problem, Denial(principal, permission="break-glass"))
    if not MIN_REASON <= len(reason) <= MAX_REASON:
        raise ValidationFailed(
            msg(
                "A break-glass reason must be {least} to {most} characters: say why "
                "this emergency access is needed.",
                least=MIN_REASON,
                most=MAX_REASON,
            )
        )
    return replace(principal, break_glass_reason=reason)
