"""SMART on FHIR scopes on API tokens, mapped onto the vault's permissions.

An API token may carry SMART-style scopes next to (or instead of) the vault's own
permission names. Each scope grants the permissions of its resource and actions:

=====================  ===============  =========================================
Resource               read (r, s)      write (c, u, d)
=====================  ===============  =========================================
``DocumentReference``  documents:read   documents:write (c, u), documents:delete (d)
``Binary``             documents:content  documents:write (c)
``Patient``            patients:read    patients:write (c, u)
``AuditEvent``         audit:read       (nothing: the audit log is append-only)
``*``                  all of the above
=====================  ===============  =========================================

SMART v1 actions (``read``, ``write``, ``*``) and v2 letters (``rs``, ``cud``,
``cruds``, in that order) are both understood. The context prefix decides the reach:

* ``user/`` and ``system/``: the token's own reach, which for an API token is every
  patient (as with the vault's permission names);
* ``patient/``: only the patient in context. An API token's patient in context is
  the patient record of the user it belongs to (a token created for a patient user).
  A token without one reaches no patient at all. One ``patient/`` scope narrows the
  whole token: mixing contexts can never widen a patient-bound token.

``AuditEvent`` reading maps onto ``audit:read``, but the reach still follows the
context: a ``patient/`` token reads only the events about its own patient, in the
patient-facing projection, and never the whole log (``access.audit_reach``).

A scope the vault cannot honour (an unknown resource, v2 query parameters such as
``?category=…``) is refused when the token is created, never silently ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

# Permission names as in ``access.policy.Permission`` (strings, so the policy can import
# this module without a cycle; a test checks every one is a real permission).
DOCUMENT_READ = "documents:read"
DOCUMENT_WRITE = "documents:write"
DOCUMENT_DELETE = "documents:delete"
CONTENT_READ = "documents:content"
PATIENT_READ = "patients:read"
PATIENT_WRITE = "patients:write"
AUDIT_READ = "audit:read"

PATIENT_CONTEXT = "patient"
CONTEXTS = frozenset({PATIENT_CONTEXT, "user", "system"})
_SCOPE = re.compile(r"^(patient|user|system)/([A-Za-z]+|\*)\.(read|write|\*|c?r?u?d?s?)$")
_V1_ACTIONS = {"read": "rs", "write": "cud", "*": "cruds"}

# (resource, action letter) -> permissions granted.
GRANTS: dict[str, dict[str, frozenset[str]]] = {
    "DocumentReference": {
        "r": frozenset({DOCUMENT_READ}),
        "s": frozenset({DOCUMENT_READ}),
        "c": frozenset({DOCUMENT_WRITE}),
        "u": frozenset({DOCUMENT_WRITE}),
        "d": frozenset({DOCUMENT_DELETE}),
    },
    "Binary": {"r": frozenset({CONTENT_READ}), "c": frozenset({DOCUMENT_WRITE})},
    "Patient": {
        "r": frozenset({PATIENT_READ}),
        "s": frozenset({PATIENT_READ}),
        "c": frozenset({PATIENT_WRITE}),
        "u": frozenset({PATIENT_WRITE}),
    },
    "AuditEvent": {"r": frozenset({AUDIT_READ}), "s": frozenset({AUDIT_READ})},
}
RESOURCES = frozenset(GRANTS)


class InvalidScope(ValueError):
    """A scope string that is not a SMART scope the vault understands."""


def looks_like_smart_scope(scope: str) -> bool:
    return "/" in scope


def _parse(scope: str) -> tuple[str, str, str]:
    match = _SCOPE.match(scope)
    if match is None or not match.group(3):
        raise InvalidScope(
            f"{scope!r} is not a SMART scope the vault understands: use "
            "{patient|user|system}/{Resource|*}.{read|write|*|cruds}"
        )
    context, resource, actions = match.groups()
    if resource != "*" and resource not in RESOURCES:
        raise InvalidScope(
            f"{scope!r} names a resource the vault does not serve: use one of "
            f"{', '.join(sorted(RESOURCES))} or *"
        )
    return context, resource, _V1_ACTIONS.get(actions, actions)


def validate(scope: str) -> None:
    """Raise :class:`InvalidScope` unless ``scope`` is a SMART scope the vault honours."""
    _parse(scope)


@lru_cache(maxsize=1024)
def _permissions(scopes: frozenset[str]) -> frozenset[str]:
    granted: set[str] = set()
    for scope in scopes:
        if not looks_like_smart_scope(scope):
            continue
        try:
            _, resource, actions = _parse(scope)
        except InvalidScope:
            continue  # refused at creation; a stored oddity grants nothing
        resources = RESOURCES if resource == "*" else (resource,)
        for name in resources:
            for action in actions:
                granted |= GRANTS[name].get(action, frozenset())
    return frozenset(granted)


def permissions(scopes: frozenset[str]) -> frozenset[str]:
    """The names of every permission the SMART scopes among ``scopes`` grant."""
    return _permissions(scopes)


def patient_bound(scopes: Iterable[str]) -> bool:
    """Whether any scope is ``patient/…``: the token then reaches its own patient only."""
    return any(scope.startswith(PATIENT_CONTEXT + "/") for scope in scopes)
