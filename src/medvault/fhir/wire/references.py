"""Resource ids and references as FHIR clients write them.

Ids: a DocumentReference is ``{document id}`` (its current version) or
``{document id}.{n}`` (version n, superseded by a later one); Binary, Patient and
AuditEvent ids are the vault's own ids. Anything else is simply not found.

References: ``Patient/{id}``, the same as an absolute URL on this server's base, or a
``urn:uuid:`` of another entry in the same transaction. References to other servers
are refused: the vault cannot vouch for what it does not hold.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from medvault.kit.problems import NotFound

# FHIR ids are case-sensitive: only the canonical (lower-case) spelling names a resource.
_DOCUMENT_ID = re.compile(
    r"^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})(?:\.([1-9][0-9]{0,8}))?$"
)
URN_UUID = "urn:uuid:"


@dataclass(frozen=True)
class DocumentId:
    """A DocumentReference id: the document, and a version number unless it is current."""

    document_id: uuid.UUID
    version: int | None = None

    def __str__(self) -> str:
        if self.version is None:
            return str(self.document_id)
        return f"{self.document_id}.{self.version}"


def document_reference_id(document_id: uuid.UUID, number: int, current: int) -> str:
    """The id of version ``number``: the document's own id while it is the current one."""
    return str(DocumentId(document_id, None if number == current else number))


def parse_document_id(raw: str) -> DocumentId | None:
    match = _DOCUMENT_ID.match(raw)
    if match is None:
        return None
    number = match.group(2)
    return DocumentId(uuid.UUID(match.group(1)), int(number) if number else None)


def document_id_or_404(raw: str) -> DocumentId:
    parsed = parse_document_id(raw)
    if parsed is None:
        raise NotFound("No DocumentReference with this id.")
    return parsed


def parse_uuid(raw: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(raw.strip())
    except ValueError:
        return None


def uuid_or_404(raw: str, resource_type: str) -> uuid.UUID:
    parsed = parse_uuid(raw)
    if parsed is None or str(parsed) != raw:
        raise NotFound(f"No {resource_type} with this id.")
    return parsed


def split_reference(reference: str, base: str) -> tuple[str, str] | None:
    """(type, id) of a literal reference on this server, or None if it is not one.

    ``Patient/123``, ``{base}/Patient/123`` and ``Patient/123/_history/4`` all name
    Patient 123; a reference to another server's base is not ours.
    """
    text = reference.strip()
    prefix = base.rstrip("/") + "/"
    if text.startswith(prefix):
        text = text[len(prefix) :]
    elif "://" in text or text.startswith(URN_UUID):
        return None
    parts = text.split("/")
    if len(parts) == 4 and parts[2] == "_history":
        parts = parts[:2]
    if len(parts) != 2 or not parts[0] or not parts[1]:
        return None
    return parts[0], parts[1]
