"""RFC 9457 problem details: every error a client can see is one of these.

Each error kind has a stable ``type`` URI so that clients can branch on it without
parsing prose. The full list is documented in ``docs/problems.md``.

Services raise these, so this module imports no HTTP framework: importing a service
must not load FastAPI. ``kit/problem_handlers.py`` turns them into responses.
"""

from __future__ import annotations

from typing import Any

from medvault.kit.i18n import N_

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "urn:medvault:problem:"


class Problem(Exception):
    """An error that is safe to show to the client as-is."""

    status: int = 500
    slug: str = "internal-error"
    title: str = N_("Internal server error")

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.headers = headers or {}
        self.extensions = extensions
        # Server-side only, never serialised: what an access denial should audit.
        self.denial: object | None = None

    @property
    def type_uri(self) -> str:
        return PROBLEM_TYPE_BASE + self.slug

    def to_dict(self, *, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"type": self.type_uri, "title": self.title, "status": self.status}
        if self.detail:
            body["detail"] = self.detail
        if instance:
            body["instance"] = instance
        body.update(self.extensions)
        return body


class BadRequest(Problem):
    status, slug, title = 400, "bad-request", N_("Bad request")


class MissingFile(Problem):
    status, slug, title = 400, "missing-file", N_("No file in the request")


class ClientGone(Problem):
    status, slug, title = 400, "client-disconnected", N_("The client went away mid-request")


class ValidationFailed(Problem):
    status, slug, title = 422, "validation-error", N_("The request is not valid")


class InvalidCharacters(ValidationFailed):
    status, slug, title = 422, "invalid-characters", N_("The text holds control characters")


class SearchTooComplex(Problem):
    status, slug, title = 400, "search-too-complex", N_("The search has too many values or words")


class Unauthorized(Problem):
    status, slug, title = 401, "unauthorized", N_("Authentication required")

    def __init__(self, detail: str | None = None, **extensions: Any) -> None:
        super().__init__(
            detail, headers={"WWW-Authenticate": 'Bearer realm="medvault"'}, **extensions
        )


class Forbidden(Problem):
    status, slug, title = 403, "forbidden", N_("Not allowed")


class NotFound(Problem):
    status, slug, title = 404, "not-found", N_("Not found")


class MethodNotAllowed(Problem):
    status, slug, title = 405, "method-not-allowed", N_("Method not allowed")


class Conflict(Problem):
    status, slug, title = 409, "conflict", N_("Conflict")


class DuplicatePatient(Problem):
    status, slug, title = 409, "duplicate-patient", N_("A patient with this identifier exists")


class DuplicateDocument(Problem):
    status, slug, title = 409, "duplicate-document", N_("This patient already has this document")


class VersionConflict(Problem):
    status, slug, title = 409, "version-conflict", N_("Another version was added at the same time")


class Gone(Problem):
    status, slug, title = 410, "document-deleted", N_("The document has been deleted")


class Destroyed(Problem):
    status, slug, title = 410, "document-destroyed", N_("The document was destroyed")


class PayloadTooLarge(Problem):
    status, slug, title = 413, "payload-too-large", N_("The upload is larger than allowed")


class HeadersTooLarge(Problem):
    status, slug, title = 431, "headers-too-large", N_("The request head is larger than allowed")


class UnsupportedMediaType(Problem):
    status, slug, title = 415, "unsupported-media-type", N_("This type of file is not accepted")


class RangeNotSatisfiable(Problem):
    status, slug, title = 416, "range-not-satisfiable", N_("The requested range is not satisfiable")


class UnknownPatient(Problem):
    status, slug, title = 422, "unknown-patient", N_("The patient does not exist")


class SignedUrlInvalid(Problem):
    status, slug, title = 403, "signed-url-invalid", N_("The download link is not valid")


class SignedUrlExpired(Problem):
    status, slug, title = 403, "signed-url-expired", N_("The download link has expired")


class IntegrityFailure(Problem):
    status, slug, title = 500, "integrity-failure", N_("Stored content failed its integrity check")


class KeyUnavailable(Problem):
    status, slug, title = (
        503,
        "key-unavailable",
        N_("The key for this document is not available here"),
    )


# When a client may try again after an outage of a backing service: long enough not to
# hammer a database that is restarting, short enough that a blip costs little.
OUTAGE_RETRY_AFTER_SECONDS = 5


class ServiceUnavailable(Problem):
    """A backing service is down: every such answer says when to retry (``Retry-After``)."""

    status, slug, title = 503, "service-unavailable", N_("A backing service is unavailable")

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail, headers=headers, **extensions)
        self.headers.setdefault("Retry-After", str(OUTAGE_RETRY_AFTER_SECONDS))


class DatabaseUnavailable(ServiceUnavailable):
    slug, title = "database-unavailable", N_("A database is unavailable")


class StorageUnavailable(ServiceUnavailable):
    slug, title = "storage-unavailable", N_("The document store is unavailable")
