"""DocumentReference ⇄ a document version.

Each version of a document is one DocumentReference: the current version under the
document's own id (``status`` current, or entered-in-error once soft-deleted), each
earlier version under ``{document id}.{n}`` (superseded). A version after the first
``replaces`` the one before it. Metadata (type, title, description, classification)
belongs to the document, so every version shows the document's current metadata.

On input, the vault honours what it can store and says so for the rest: server-managed
elements (meta, date, author, category, relatesTo…) are ignored as FHIR allows, and
elements it cannot keep (identifier, context…) are refused rather than silently lost.

Two facts about a version are filled in by background jobs after it is stored:

* **The malware scan** is a ``meta.security`` coding of the vault's code system
  ``urn:medvault:scan-state``, whose code is the version's scan state (``not-scanned``,
  ``pending``, ``clean``, ``infected``, ``failed``, ``released``; see
  ``documents.models.ScanState``). It is always present, ``not-scanned`` included: a
  missing label would leave a client unable to tell "nobody scanned this" from "this
  server does not say". ``meta.security`` is where R4 puts labels about how a resource
  may be handled, and an extensible binding leaves room for a code system of the
  server's own; ``securityLabel`` stays the confidentiality (N/R/V) a client sets. An
  infected version keeps its ``attachment.url``: the Binary read answers 403
  (quarantined), or 410 once an administrator destroyed the content.
* **Attachment.hash** (SHA-1) is left out until the vault has computed it (the
  ``fhir-sha1`` job, or ``medvault fhir backfill-hashes`` for old versions).

Neither changes ``meta.versionId``, which tracks the document's own changes (it is
the ``If-Match`` token of updates): a client polling for the scan verdict reads the
resource again rather than relying on the version id.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from medvault.documents.models import (
    Classification,
    Document,
    DocumentStatus,
    DocumentVersion,
    ScanState,
)
from medvault.documents.schemas import LoincCode
from medvault.fhir.mapping.codes import (
    ACTOR_SYSTEM,
    CATEGORY_DISPLAY,
    CATEGORY_SYSTEM,
    CLASSIFICATION_BY_CODE,
    CONFIDENTIALITY,
    CONFIDENTIALITY_CODE,
    LOINC,
    LOINC_DISPLAY,
    RETENTION_EXTENSION,
    RFC3986,
    SHA256_EXTENSION,
    category_of,
    version_token,
)
from medvault.fhir.wire.json_stream import StreamedString
from medvault.fhir.wire.outcome import NotSupported, UnknownReference, UnprocessableResource
from medvault.fhir.wire.primitives import instant
from medvault.fhir.wire.references import document_reference_id, parse_uuid, split_reference

_LOINC: TypeAdapter[str] = TypeAdapter(LoincCode)
MAX_TITLE = 500
MAX_DESCRIPTION = 10_000

# The vault's own code system for the malware scan state, in meta.security.
SCAN_STATE_SYSTEM = "urn:medvault:scan-state"
SCAN_STATE_DISPLAY = {
    ScanState.NOT_SCANNED: "Not scanned for malware",
    ScanState.PENDING: "Malware scan pending",
    ScanState.CLEAN: "No malware found",
    ScanState.INFECTED: "Malware found: quarantined",
    ScanState.FAILED: "Malware scan failed; it is retried",
    ScanState.RELEASED: "Flagged as malware, released by an administrator",
}

# Set by the server; FHIR lets a server ignore what a client sends for these.
SERVER_MANAGED = frozenset(
    {"id", "meta", "text", "masterIdentifier", "docStatus", "category", "date", "author"}
)
# Elements the vault has nowhere to keep: refusing them beats losing them quietly.
UNSUPPORTED = frozenset(
    {
        "identifier",
        "authenticator",
        "custodian",
        "context",
        "contained",
        "modifierExtension",
        "implicitRules",
    }
)


def status_of(document: Document, version: DocumentVersion) -> str:
    if document.status == DocumentStatus.DELETED:
        return "entered-in-error"
    return "current" if version.version == document.current_version else "superseded"


def _b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


def scan_security(version: DocumentVersion) -> dict[str, str]:
    """The ``meta.security`` coding that states the version's malware scan."""
    state = ScanState(version.scan_state)
    return {"system": SCAN_STATE_SYSTEM, "code": state.value, "display": SCAN_STATE_DISPLAY[state]}


def attachment(document: Document, version: DocumentVersion, base: str) -> dict[str, Any]:
    item: dict[str, Any] = {
        "extension": [{"url": SHA256_EXTENSION, "valueBase64Binary": _b64(version.sha256)}],
        "contentType": version.content_type,
        "url": f"{base}/Binary/{version.id}",
        "size": version.size,
    }
    if version.sha1:
        # R4 defines Attachment.hash as the base64 SHA-1. It is left out until the
        # fhir-sha1 job (or backfill-hashes) computed it, never guessed or claimed.
        item["hash"] = _b64(version.sha1)
    item["title"] = document.title
    item["creation"] = instant(version.created_at)
    return item


def to_resource(
    document: Document, version: DocumentVersion, *, base: str, draft: bool = False
) -> dict[str, Any]:
    """The DocumentReference for one version of a document."""
    code, display = CONFIDENTIALITY_CODE[Classification(document.classification)]
    category = category_of(document.document_type)
    type_coding: dict[str, str] = {"system": LOINC, "code": document.document_type}
    if document.document_type in LOINC_DISPLAY:
        type_coding["display"] = LOINC_DISPLAY[document.document_type]
    resource: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "id": document_reference_id(document.id, version.version, document.current_version),
        "meta": {
            "versionId": version_token(document.updated_at),
            "lastUpdated": instant(document.updated_at),
            "security": [scan_security(version)],
        },
        # Each version is a distinct document in the IHE sense, with its own unique id.
        "masterIdentifier": {"system": RFC3986, "value": f"urn:uuid:{version.id}"},
        "status": status_of(document, version),
        "docStatus": "preliminary" if draft else "final",
        "type": {"coding": [type_coding]},
        "category": [
            {
                "coding": [
                    {
                        "system": CATEGORY_SYSTEM,
                        "code": category,
                        "display": CATEGORY_DISPLAY[category],
                    }
                ]
            }
        ],
        "subject": {"reference": f"Patient/{document.patient_id}"},
        "date": instant(version.created_at),
        # Uploaders are users or API tokens of the auth database, not FHIR resources
        # the vault serves: a logical reference by their stable actor id.
        "author": [{"identifier": {"system": ACTOR_SYSTEM, "value": version.created_by}}],
    }
    if version.version > 1:
        resource["relatesTo"] = [
            {
                "code": "replaces",
                "target": {"reference": f"DocumentReference/{document.id}.{version.version - 1}"},
            }
        ]
    if document.description:
        resource["description"] = document.description
    resource["securityLabel"] = [
        {"coding": [{"system": CONFIDENTIALITY, "code": code, "display": display}]}
    ]
    resource["content"] = [{"attachment": attachment(document, version, base)}]
    if document.retention_class is not None:
        resource["extension"] = [retention_extension(document)]
    return resource


def retention_extension(document: Document) -> dict[str, Any]:
    """The record's retention class and date (and its destruction), as one extension."""
    parts: list[dict[str, Any]] = [{"url": "class", "valueCode": document.retention_class}]
    if document.retain_until is not None:
        parts.append({"url": "retainUntil", "valueDate": document.retain_until.isoformat()})
    if document.destroyed_at is not None:
        parts.append({"url": "destroyed", "valueDateTime": instant(document.destroyed_at)})
    return {"url": RETENTION_EXTENSION, "extension": parts}


# -- input ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttachmentInput:
    content_type: str | None
    data: StreamedString | None
    url: str | None
    size: int | None
    sha1_hex: str | None


@dataclass(frozen=True)
class DocumentInput:
    """What a DocumentReference from a client asks the vault to store."""

    patient_id: uuid.UUID
    document_type: str
    title: str | None
    description: str | None
    # None when the client sent no confidentiality label: "normal" for a new document,
    # unchanged for an update (dropping a label must never downgrade a restricted one).
    classification: Classification | None
    attachment: AttachmentInput

    def upload_fields(self) -> dict[str, str]:
        """The fields of the REST upload pipeline (``documents.schemas.DocumentFields``)."""
        fields = {"patient_id": str(self.patient_id), "document_type": self.document_type}
        if self.classification is not None:
            fields["classification"] = self.classification.value
        if self.title:
            fields["title"] = self.title
        if self.description:
            fields["description"] = self.description
        return fields


def _fail(message: str, expression: str) -> UnprocessableResource:
    return UnprocessableResource(message, expression=[expression])


def patient_of_subject(subject: Any, *, base: str, where: str) -> uuid.UUID:
    reference = subject.get("reference") if isinstance(subject, dict) else None
    if not isinstance(reference, str):
        raise _fail("subject must reference the Patient (subject.reference).", f"{where}.subject")
    target = split_reference(reference, base)
    patient_id = parse_uuid(target[1]) if target and target[0] == "Patient" else None
    if patient_id is None:
        raise UnknownReference(
            "subject must be Patient/{id} of a patient on this server.",
            expression=[f"{where}.subject.reference"],
        )
    return patient_id


def loinc_code(concept: Any, *, where: str) -> str:
    codings = concept.get("coding") if isinstance(concept, dict) else None
    for coding in codings or ():
        if isinstance(coding, dict) and coding.get("system") == LOINC:
            code = coding.get("code")
            if isinstance(code, str) and _is_loinc(code):
                return code
            raise _fail("type's LOINC code is not a LOINC code (e.g. 11502-2).", f"{where}.type")
    raise _fail(
        "type needs a LOINC coding (system http://loinc.org), e.g. 11502-2 for a lab report.",
        f"{where}.type",
    )


def _is_loinc(code: str) -> bool:
    try:
        _LOINC.validate_python(code)
    except ValidationError:
        return False
    return True


def classification_of(labels: Any, *, where: str) -> Classification | None:
    found: Classification | None = None
    for index, label in enumerate(labels or ()):
        for coding in (label.get("coding") if isinstance(label, dict) else None) or ():
            if not isinstance(coding, dict):
                continue
            if coding.get("system") != CONFIDENTIALITY or coding.get("code") not in (
                CLASSIFICATION_BY_CODE
            ):
                raise NotSupported(
                    "securityLabel accepts one confidentiality code of "
                    f"{CONFIDENTIALITY}: N (normal), R (restricted) or V (very restricted).",
                    expression=[f"{where}.securityLabel[{index}]"],
                )
            value = CLASSIFICATION_BY_CODE[coding["code"]]
            if found is not None and found != value:
                raise _fail("securityLabel names two confidentiality levels.", f"{where}")
            found = value
    return found


def _text(value: Any, limit: int, expression: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise _fail(f"At most {limit} characters.", expression)
    return value.strip() or None


def _attachment(content: Any, *, where: str) -> tuple[AttachmentInput, str | None]:
    if not isinstance(content, list) or len(content) != 1:
        raise NotSupported(
            "A document in the vault has exactly one attachment: send one content entry.",
            expression=[f"{where}.content"],
        )
    entry = content[0] if isinstance(content[0], dict) else {}
    item = entry.get("attachment")
    at = f"{where}.content[0].attachment"
    if not isinstance(item, dict):
        raise _fail("content[0].attachment is required.", at)
    data, url = item.get("data"), item.get("url")
    if data is not None and not isinstance(data, StreamedString):
        raise _fail("attachment.data must be base64 text.", f"{at}.data")
    if (data is None) == (url is None):
        raise _fail("Send either attachment.data (base64) or attachment.url (a Binary).", at)
    size = item.get("size")
    digest = item.get("hash")
    sha1_hex = None
    if digest is not None:
        try:
            raw = base64.b64decode(digest, validate=True)
        except (ValueError, TypeError):
            raw = b""
        if len(raw) != 20:
            raise _fail("attachment.hash must be the base64 SHA-1 of the data.", f"{at}.hash")
        sha1_hex = raw.hex()
    content_type = item.get("contentType")
    return (
        AttachmentInput(
            content_type=content_type.split(";")[0].strip().lower()
            if isinstance(content_type, str)
            else None,
            data=data,
            url=url if isinstance(url, str) else None,
            size=size if isinstance(size, int) else None,
            sha1_hex=sha1_hex,
        ),
        _text(item.get("title"), MAX_TITLE, f"{at}.title"),
    )


def check_elements(resource: dict[str, Any], *, where: str, allow: frozenset[str]) -> None:
    """Refuse elements the vault cannot keep (``allow`` lifts the relatesTo refusal)."""
    refused = sorted(
        key for key in resource if key in UNSUPPORTED or (key == "relatesTo" and key not in allow)
    )
    if not refused:
        return
    hint = (
        " To add a version to a document, POST a Binary with "
        "X-Security-Context: DocumentReference/{id}."
        if "relatesTo" in refused
        else ""
    )
    raise NotSupported(
        f"The vault cannot keep {', '.join(refused)}: leave it out.{hint}",
        expression=[f"{where}.{key}" for key in refused],
    )


def from_resource(
    resource: dict[str, Any], *, base: str, where: str = "DocumentReference", update: bool = False
) -> DocumentInput:
    """A client's DocumentReference as the vault will store it (structure already valid)."""
    check_elements(resource, where=where, allow=frozenset({"relatesTo"}) if update else frozenset())
    status = resource.get("status")
    if not update and status != "current":
        raise _fail("A new DocumentReference has status current.", f"{where}.status")
    attachment_input, title = _attachment(resource.get("content"), where=where)
    return DocumentInput(
        patient_id=patient_of_subject(resource.get("subject"), base=base, where=where),
        document_type=loinc_code(resource.get("type"), where=where),
        title=title,
        description=_text(resource.get("description"), MAX_DESCRIPTION, f"{where}.description"),
        classification=classification_of(resource.get("securityLabel"), where=where),
        attachment=attachment_input,
    )


def early_fields(partial: Any, *, base: str) -> dict[str, str]:
    """Upload fields already known before the data arrives (partial document, best effort).

    Used only to refuse a wrong patient before reading the body; everything is
    validated again, fully, once the document is complete.
    """
    fields: dict[str, str] = {}
    if not isinstance(partial, dict):
        return fields
    try:
        fields["patient_id"] = str(
            patient_of_subject(partial.get("subject"), base=base, where="DocumentReference")
        )
        fields["document_type"] = loinc_code(partial.get("type"), where="DocumentReference")
    except (UnprocessableResource, NotSupported, UnknownReference):
        return {}
    return fields
