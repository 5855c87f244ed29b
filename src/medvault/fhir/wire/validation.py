"""Structural validation of incoming resources against the FHIR R4 models.

``fhir.resources`` ships R4B models (FHIR 4.3), which for DocumentReference, Binary,
Bundle, Patient and the data types used here are the R4 (4.0.1) definitions. They
check element names, cardinalities and primitive formats; the vault's own rules
(which elements it can honour) are checked by the mappings afterwards.
"""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from medvault.fhir.wire.json_stream import StreamedString
from medvault.fhir.wire.outcome import InvalidResource

# Streamed base64 is checked while it is decoded; the model only needs a valid stand-in.
_BASE64_STAND_IN = "AAAA"


def _without_streams(value: Any) -> Any:
    if isinstance(value, StreamedString):
        return _BASE64_STAND_IN
    if isinstance(value, dict):
        return {key: _without_streams(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_streams(item) for item in value]
    return value


def _expression(root: str, loc: tuple[int | str, ...]) -> str:
    text = root
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def validate_structure(resource: Any, *, expected: str, where: str | None = None) -> dict[str, Any]:
    """``resource`` as a dict, if it is a structurally valid R4 ``expected`` resource.

    ``where`` prefixes the FHIRPath of reported errors (``Bundle.entry[2].resource``).
    """
    root = where or expected
    if not isinstance(resource, dict):
        raise InvalidResource(f"Expected a {expected} resource (a JSON object).", expression=[root])
    kind = resource.get("resourceType")
    if kind != expected:
        shown = kind if isinstance(kind, str) and kind.isalnum() and len(kind) < 64 else "?"
        raise InvalidResource(
            f"Expected a {expected} resource, got resourceType {shown}.",
            expression=[f"{root}.resourceType"],
        )
    try:
        get_fhir_model_class(expected).model_validate(_without_streams(resource))
    except ValidationError as exc:
        errors = [
            {
                "loc": [str(part) for part in err["loc"]],
                "msg": err["msg"],
                "type": err["type"],
                "expression": _expression(root, tuple(err["loc"])),
            }
            for err in exc.errors(include_input=False, include_url=False)
        ]
        raise InvalidResource(
            f"The {expected} does not conform to FHIR R4.", errors=errors
        ) from None
    return resource
