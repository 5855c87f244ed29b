"""What an upload will become, and the checks that can refuse it before its body streams.

An upload names its target (a patient for a new document, or a document for a new
version) in fields that may arrive before the file. Checked then, a 50 MiB upload to
a patient the caller cannot reach is refused before a byte of it is read. The
transaction that finally writes checks again, and that is the decision that counts.

For a small body the early check buys nothing: reading 10 KB costs less than the
check's own database trip, which was most of a small upload's work besides its
commit. So when the declared length is at most ``EARLY_CHECK_MIN_BYTES`` the check is
*deferred*: the commit's check decides, and should the upload be refused for any
other reason first (wrong type, bad fields, a client gone), the deferred check runs
then, so the caller gets the same answer as before (the patient's refusal first) and
the refusal is audited as an attempt on the record exactly as before.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from anyio import to_thread
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session

from medvault.access.authorship import require_change
from medvault.access.denials import Denial, denied, failed_attempt, record_unless_audited
from medvault.access.policy import Permission, reaches_patient
from medvault.auth.principal import Principal
from medvault.documents import service as documents
from medvault.documents.schemas import DocumentFields, VersionFields
from medvault.kit.i18n import N_
from medvault.kit.problems import Problem, UnknownPatient, ValidationFailed
from medvault.patients import repository as patients
from medvault.runtime import Runtime

# Bodies declared at least this large are checked before they stream.
EARLY_CHECK_MIN_BYTES = 256 * 1024

FieldsT = TypeVar("FieldsT", bound=BaseModel)


def validate_fields(model: type[FieldsT], raw: Mapping[str, str]) -> FieldsT:
    cleaned = {key: value for key, value in raw.items() if value != ""}
    try:
        return model.model_validate(cleaned)
    except ValidationError as exc:
        errors = [
            {"loc": [str(p) for p in err["loc"]], "msg": err["msg"], "type": err["type"]}
            for err in exc.errors()
        ]
        raise ValidationFailed(
            N_("Some upload fields are missing or invalid."), errors=errors
        ) from None


def check_patient(
    session: Session,
    principal: Principal,
    patient_id: uuid.UUID,
    *,
    problem: UnknownPatient | None = None,
) -> None:
    """Refuse an upload to a patient the caller does not reach, or who does not exist.

    Both answer the same 422 and are audited alike (one ``access.denied`` event), so
    neither the answer nor its timing tells them apart; the event names the patient
    only when there is a real record, an attempt on which is always in the audit log.
    """
    if reaches_patient(session, principal, patient_id):
        return
    refused = problem or UnknownPatient(N_("No patient with this patient_id."))
    real = patient_id if patients.get(session, patient_id) is not None else None
    write = Permission.DOCUMENT_WRITE.value
    raise denied(refused, Denial(principal, "Patient", patient_id, real, write))


@dataclass
class UploadTarget:
    """What the upload will become: a new document (fields) or a version of one."""

    runtime: Runtime
    principal: Principal
    document_id: uuid.UUID | None
    # The body's declared length, when the client declared one.
    declared_bytes: int | None = None
    # Set once the precheck found the record this upload writes to: from then on, any
    # refusal (too large, wrong type, a client gone mid-file) is an audited attempt.
    attempt: Denial | None = None
    # Fields whose precheck was deferred (a small body): run only if the upload fails.
    deferred: DocumentFields | VersionFields | None = None

    def validate(self, raw: Mapping[str, str]) -> DocumentFields | VersionFields:
        if self.document_id is None:
            return validate_fields(DocumentFields, raw)
        return validate_fields(VersionFields, raw)

    async def check_early(self, fields: DocumentFields | VersionFields) -> None:
        """The precheck now, or, for a small body, only if the upload fails."""
        small = self.declared_bytes is not None and self.declared_bytes < EARLY_CHECK_MIN_BYTES
        if small:
            self.deferred = fields
            return
        await to_thread.run_sync(self.precheck, fields)

    async def check_early_if_complete(self, raw: Mapping[str, str]) -> None:
        """Fail fast on what is already known; incomplete fields are validated later."""
        try:
            early = self.validate(raw)
        except ValidationFailed:
            return
        await self.check_early(early)

    def precheck(self, fields: DocumentFields | VersionFields) -> None:
        """Fail when the patient or document is already known to be wrong."""
        with self.runtime.clinical.read_session() as session:
            if isinstance(fields, DocumentFields):
                check_patient(session, self.principal, fields.patient_id)
                self.attempt = failed_attempt(
                    self.principal,
                    "document.create",
                    resource_type="Document",
                    resource_id=None,
                    patient_id=fields.patient_id,
                )
            else:
                assert self.document_id is not None
                document, _ = documents.resolve_version(
                    session=session,
                    principal=self.principal,
                    document_id=self.document_id,
                    number=None,
                    attempt="document.version.create",
                )
                require_change(self.principal, document)
                self.attempt = failed_attempt(
                    self.principal,
                    "document.version.create",
                    resource_type="Document",
                    resource_id=document.id,
                    patient_id=document.patient_id,
                )

    async def refused(self, error: BaseException) -> None:
        """Audit a refused upload as an attempt on its record; raises the patient's or
        document's own refusal instead when the deferred precheck finds one."""
        if self.deferred is not None and self.attempt is None and isinstance(error, Problem):
            fields, self.deferred = self.deferred, None
            await to_thread.run_sync(self.precheck, fields)  # may raise its own refusal
        if isinstance(error, Problem) and self.attempt is not None:
            record_unless_audited(error, self.attempt)
