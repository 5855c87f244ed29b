"""OperationOutcome: how every error under ``/fhir`` is answered.

The problem itself (status, stable type, audit of denials) is decided exactly as for
the REST API; only its dialect changes. Each issue carries the problem type in
``details.coding`` (system ``urn:medvault:problem``), so a FHIR client can branch on
the same stable codes a REST client sees, plus a FHIR ``issue.code``.

Resource mapping, repositories and transactions raise these problem types and build
these bodies, so this module imports no HTTP framework; ``wire/responses.py`` renders
them as responses.
"""

from __future__ import annotations

from typing import Any

from medvault.kit.problems import Problem

PROBLEM_SYSTEM = "urn:medvault:problem"

# FHIR issue-type codes (http://hl7.org/fhir/issue-type) by HTTP status…
_CODE_BY_STATUS = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    409: "conflict",
    410: "deleted",
    412: "conflict",
    413: "too-costly",
    415: "not-supported",
    416: "invalid",
    422: "processing",
    428: "required",
    429: "throttled",
    500: "exception",
    503: "transient",
}
# …and where a problem type says more than its status.
_CODE_BY_SLUG = {
    "duplicate-document": "duplicate",
    "duplicate-patient": "duplicate",
    "validation-error": "invalid",
    "fhir-invalid-resource": "structure",
    "fhir-not-supported": "not-supported",
    "fhir-binary-too-large": "too-costly",
    "unknown-patient": "not-found",
    "fhir-unknown-reference": "not-found",
    "integrity-failure": "exception",
    "key-unavailable": "transient",
}


class InvalidResource(Problem):
    """The body is not a FHIR resource of the expected shape (R4 structure rules)."""

    status, slug, title = 400, "fhir-invalid-resource", "The resource is not valid FHIR R4"


class UnprocessableResource(Problem):
    """Valid FHIR, but it breaks one of the vault's rules for this interaction."""

    status, slug, title = 422, "fhir-unprocessable", "The resource cannot be processed"


class NotSupported(Problem):
    status, slug, title = 422, "fhir-not-supported", "Not supported by this server"


class UnknownReference(Problem):
    status, slug, title = 422, "fhir-unknown-reference", "A reference does not resolve"


class InvalidSearch(Problem):
    status, slug, title = 400, "fhir-invalid-search", "The search cannot be performed"


class PreconditionFailed(Problem):
    status, slug, title = 412, "precondition-failed", "The resource has changed"


class PreconditionRequired(Problem):
    status, slug, title = 428, "precondition-required", "If-Match is required"


class BinaryTooLargeForJson(Problem):
    status, slug, title = 406, "fhir-binary-too-large", "Too large for the base64 form"


def issue_code(problem: Problem) -> str:
    return _CODE_BY_SLUG.get(problem.slug) or _CODE_BY_STATUS.get(
        problem.status, "exception" if problem.status >= 500 else "processing"
    )


def issue(
    severity: str,
    code: str,
    diagnostics: str | None = None,
    *,
    expression: list[str] | None = None,
    coding: dict[str, str] | None = None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {"severity": severity, "code": code}
    if coding is not None:
        entry["details"] = {"coding": [coding], "text": coding.get("display", "")}
    if diagnostics:
        entry["diagnostics"] = diagnostics
    if expression:
        entry["expression"] = expression
    return entry


def outcome(*issues: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": list(issues)}


def information(text: str) -> dict[str, Any]:
    return outcome(issue("information", "informational", text))


def _diagnostics(problem: Problem) -> str:
    """The detail, plus the problem's scalar members (an existing id, a size limit…).

    problem+json carries these as members of their own; OperationOutcome has no place
    for them, so they follow the text as ``(name: value; …)``.
    """
    text = problem.detail or problem.title
    extras = []
    for name, value in problem.extensions.items():
        if name in ("errors", "expression"):
            continue
        if isinstance(value, list | tuple):
            value = ", ".join(str(item) for item in value)
        if isinstance(value, str | int | float | bool):
            extras.append(f"{name}: {value}")
    return f"{text} ({'; '.join(extras)})" if extras else text


def problem_outcome(problem: Problem) -> dict[str, Any]:
    """The OperationOutcome for a problem: one issue, plus one per field error."""
    severity = "fatal" if problem.status == 500 else "error"
    coding = {"system": PROBLEM_SYSTEM, "code": problem.slug, "display": problem.title}
    expression = problem.extensions.get("expression")
    issues = [
        issue(
            severity,
            issue_code(problem),
            _diagnostics(problem),
            expression=list(expression) if isinstance(expression, list | tuple) else None,
            coding=coding,
        )
    ]
    # Field errors (validation problems) become issues of their own; like problem+json
    # they say where and what, never the submitted value.
    for error in problem.extensions.get("errors") or ():
        if not isinstance(error, dict):
            continue
        expression = error.get("expression")
        if isinstance(expression, str):
            issues.append(issue("error", "invalid", error.get("msg"), expression=[expression]))
            continue
        location = ".".join(str(part) for part in error.get("loc", ()))
        issues.append(
            issue(
                "error",
                "invalid",
                f"{location}: {error.get('msg', '')}" if location else error.get("msg"),
            )
        )
    return outcome(*issues)
