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
        problem = Forbidden(f"Your role ({principal.role.value}) cannot use break-glass.")
        raise denied(problem, Denial(principal, permission="break-glass"))
    if not MIN_REASON <= len(reason) <= MAX_REASON:
        raise ValidationFailed(
            f"A break-glass reason must be {MIN_REASON} to {MAX_REASON} characters: say why "
            "this emergency access is needed."
        )
    return replace(principal, break_glass_reason=reason)
