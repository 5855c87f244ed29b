"""AuditEvent ⇐ one row of the vault's audit log.

The mapping is lossless for what auditors need: who (agent, with client address and
user agent), what (entity, with the event's details), when (recorded), how it ended
(outcome), why (purposeOfEvent: emergency treatment for break-glass, with the stated
reason), and the request id and Merkle leaf index to tie it to proofs of the log.
"""

from __future__ import annotations

import json
from typing import Any

from medvault.audit.models import AuditEvent
from medvault.fhir.mapping.codes import ACTOR_SYSTEM
from medvault.fhir.wire.primitives import instant

EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
DICOM = "http://dicom.nema.org/resources/ontology/DCM"
INTERACTION = "http://hl7.org/fhir/restful-interaction"
ACTION_SYSTEM = "urn:medvault:audit-action"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
REQUEST_ID_EXTENSION = "urn:medvault:fhir:request-id"
LEAF_INDEX_EXTENSION = "urn:medvault:fhir:audit-leaf-index"
USER_AGENT_EXTENSION = "urn:medvault:fhir:user-agent"

# The vault's outcomes as FHIR's: 0 success, 4 minor failure, 8 serious failure.
OUTCOME_CODE = {"success": "0", "denied": "4", "failure": "8"}
OUTCOME_BY_CODE = {code: outcome for outcome, code in OUTCOME_CODE.items()}

# The FHIR resource a vault record is seen as, for entity.what.
RESOURCE_TYPES = {
    "Document": "DocumentReference",
    "Patient": "Patient",
    "DocumentVersion": "Binary",
}
VAULT_TYPE_BY_FHIR = {fhir: vault for vault, fhir in RESOURCE_TYPES.items()}

_INTERACTIONS = {
    "document.read": "read",
    "patient.read": "read",
    "document.list": "search-type",
    "patient.search": "search-type",
    "document.create": "create",
    "patient.create": "create",
    "document.update": "update",
    "document.delete": "delete",
}
_ACTION_VERBS = {
    "C": {"create", "add", "issue"},
    "R": {"read", "list", "search", "use"},
    "U": {"update", "restore", "enable", "disable", "change", "rotate", "integrity_restored"},
    "D": {"delete", "remove"},
}


def crude_action(action: str) -> str:
    """FHIR's C/R/U/D/E for a vault action name (by its last word; E for the rest)."""
    verb = action.rsplit(".", 1)[-1]
    for code, verbs in _ACTION_VERBS.items():
        if verb in verbs:
            return code
    return "E"


def _event_type(action: str) -> dict[str, str]:
    if action.startswith("auth."):
        return {"system": DICOM, "code": "110114", "display": "User Authentication"}
    if "integrity" in action:
        return {"system": DICOM, "code": "110113", "display": "Security Alert"}
    return {"system": EVENT_TYPE, "code": "rest", "display": "RESTful Operation"}


def _detail(key: str, value: Any) -> dict[str, str]:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return {"type": key, "valueString": text or "-"}


def _emergency(reason: str) -> list[dict[str, Any]]:
    coding = {"system": ACT_REASON, "code": "ETREAT", "display": "Emergency Treatment"}
    return [{"coding": [coding], "text": f"Break-glass: {reason}"}]


def _skeleton(event: AuditEvent) -> dict[str, Any]:
    """What every view of an event shows: what was done, when, and how it ended."""
    subtype = [{"system": ACTION_SYSTEM, "code": event.action}]
    if event.action in _INTERACTIONS:
        subtype.append({"system": INTERACTION, "code": _INTERACTIONS[event.action]})
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(event.id),
        "meta": {"versionId": "1", "lastUpdated": instant(event.occurred_at)},
        "type": _event_type(event.action),
        "subtype": subtype,
        "action": crude_action(event.action),
        "recorded": instant(event.occurred_at),
        "outcome": OUTCOME_CODE.get(event.outcome, "8"),
    }
    if event.outcome != "success":
        resource["outcomeDesc"] = "access denied" if event.outcome == "denied" else "failed"
    resource["source"] = {
        "observer": {"display": "medvault"},
        "type": [{"system": SOURCE_TYPE, "code": "4", "display": "Application Server"}],
    }
    return resource


def to_resource(event: AuditEvent) -> dict[str, Any]:
    extensions: list[dict[str, Any]] = []
    if event.request_id:
        extensions.append({"url": REQUEST_ID_EXTENSION, "valueString": event.request_id})
    if event.leaf_index is not None:
        # A string: the index outgrows FHIR R4's 32-bit integer long before the log ends.
        extensions.append({"url": LEAF_INDEX_EXTENSION, "valueString": str(event.leaf_index)})
    agent: dict[str, Any] = {
        "role": [{"text": event.actor_role}],
        "who": {"identifier": {"system": ACTOR_SYSTEM, "value": event.actor_id}},
        "requestor": True,
    }
    if event.user_agent:
        agent["extension"] = [{"url": USER_AGENT_EXTENSION, "valueString": event.user_agent}]
    if event.client_ip:
        agent["network"] = {"address": event.client_ip, "type": "2"}  # 2 = IP address
    if event.break_glass_reason:
        agent["purposeOfUse"] = _emergency(event.break_glass_reason)
    resource = _skeleton(event)
    if extensions:
        resource["extension"] = extensions
    if event.break_glass_reason:
        resource["purposeOfEvent"] = _emergency(event.break_glass_reason)
    resource["agent"] = [agent]
    entities = _entities(event)
    if entities:
        resource["entity"] = entities
    return resource


def _entities(event: AuditEvent) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = []
    details = [_detail(key, value) for key, value in sorted((event.details or {}).items())]
    fhir_type = RESOURCE_TYPES.get(event.resource_type or "")
    is_patient = event.resource_type == "Patient" and event.resource_id == str(event.patient_id)
    if event.resource_type and not is_patient:
        entity: dict[str, Any]
        if fhir_type is not None and event.resource_id:
            entity = {"what": {"reference": f"{fhir_type}/{event.resource_id}"}}
        elif event.resource_id:
            system = f"urn:medvault:{event.resource_type}"
            entity = {"what": {"identifier": {"system": system, "value": event.resource_id}}}
        else:
            entity = {"name": event.resource_type}
        entity["type"] = {"system": ENTITY_TYPE, "code": "2", "display": "System Object"}
        if details:
            entity["detail"], details = details, []
        entities.append(entity)
    if event.patient_id is not None:
        patient: dict[str, Any] = {
            "what": {"reference": f"Patient/{event.patient_id}"},
            "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
            "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
        }
        if details:
            patient["detail"], details = details, []
        entities.append(patient)
    if details:
        entities.append({"detail": details})
    return entities


def to_patient_resource(event: AuditEvent, who: str) -> dict[str, Any]:
    """The patient-facing projection: who by role or "you", what, when, how it ended.

    Nothing about other people: no actor identifier, client address, user agent,
    request id or leaf index, no details (free text may name other patients), and an
    emergency is flagged by its code without the stated reason.
    """
    agent: dict[str, Any] = {
        "role": [{"text": event.actor_role}],
        "who": {"display": who},
        "requestor": True,
    }
    resource = _skeleton(event)
    if event.break_glass_reason:
        coding = {"system": ACT_REASON, "code": "ETREAT", "display": "Emergency Treatment"}
        resource["purposeOfEvent"] = [{"coding": [coding]}]
        agent["purposeOfUse"] = [{"coding": [coding]}]
    resource["agent"] = [agent]
    entities: list[dict[str, Any]] = []
    fhir_type = RESOURCE_TYPES.get(event.resource_type or "")
    if fhir_type in ("DocumentReference", "Binary") and event.resource_id:
        entities.append(
            {
                "what": {"reference": f"{fhir_type}/{event.resource_id}"},
                "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
            }
        )
    if event.patient_id is not None:
        entities.append(
            {
                "what": {"reference": f"Patient/{event.patient_id}"},
                "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
                "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
            }
        )
    if entities:
        resource["entity"] = entities
    return resource
