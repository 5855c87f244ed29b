"""Bundles the server returns: search results and transaction responses."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from medvault.fhir.wire.outcome import issue, outcome
from medvault.fhir.wire.primitives import instant
from medvault.kit.clock import utcnow


def searchset(
    *,
    entries: Sequence[tuple[str, dict[str, Any]]],
    total: int | None,
    links: list[dict[str, str]],
    ignored: Sequence[str] = (),
) -> dict[str, Any]:
    """A ``searchset`` Bundle of (fullUrl, resource) matches.

    Parameters the server ignored are reported in an OperationOutcome entry (search
    mode ``outcome``), so a client can see its filter was not applied.
    """
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": instant(utcnow())},
        "type": "searchset",
    }
    if total is not None:
        bundle["total"] = total
    bundle["link"] = links
    items: list[dict[str, Any]] = [
        {"fullUrl": full_url, "resource": resource, "search": {"mode": "match"}}
        for full_url, resource in entries
    ]
    if ignored:
        names = ", ".join(sorted(set(ignored)))
        items.append(
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": outcome(
                    issue(
                        "warning",
                        "not-supported",
                        f"These search parameters are not supported and were ignored: {names}. "
                        "Send Prefer: handling=strict to have them refused instead.",
                    )
                ),
                "search": {"mode": "outcome"},
            }
        )
    if items:
        bundle["entry"] = items
    return bundle


def transaction_response(entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A ``transaction-response`` Bundle; ``entries`` are ``{response, resource?}`` dicts."""
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": instant(utcnow())},
        "type": "transaction-response",
    }
    if entries:
        bundle["entry"] = list(entries)
    return bundle
