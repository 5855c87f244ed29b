"""Who may change a document that already exists: add a version, or edit its metadata.

Reading a record and changing it are different rights. A patient reads every document
of their record, but a letter a clinician wrote stays the clinician's: if a patient
could add a version to it, their file would become the current version that clinicians
read. So, for every face that changes an existing document (REST ``POST
/documents/{id}/versions``, an upload with ``on_duplicate=new_version``, FHIR ``POST
Binary`` into a ``DocumentReference``, FHIR ``PUT``/describe, the portal's "Upload a new
version"), this one rule decides:

* staff (clinicians, service accounts, the vault itself) keep the rights their role or
  scopes give them on the records they reach;
* a **patient principal** (a portal patient, or an API token bound to its patient by
  ``patient/`` scopes) changes only documents whose origin is the patient: documents
  the patient uploaded. Staff-authored documents are never theirs to change.

Which records a caller reaches is decided first, by ``access.policy``; a document out of
reach is "not found" before this rule is asked.
"""

from __future__ import annotations

from medvault.access import smart_scopes
from medvault.access.denials import Denial, denied
from medvault.access.policy import Permission
from medvault.auth.principal import Principal, Role
from medvault.documents.models import Document, DocumentOrigin
from medvault.kit.i18n import N_
from medvault.kit.problems import Forbidden


class StaffAuthoredDocument(Forbidden):
    slug, title = "staff-authored-document", N_("Patients cannot change a staff-authored document")


def acts_as_patient(principal: Principal) -> bool:
    """A portal patient, or an API token whose ``patient/`` scopes bind it to its patient."""
    if principal.role is Role.PATIENT:
        return True
    return principal.role is Role.SERVICE and smart_scopes.patient_bound(principal.scopes)


def origin_for(principal: Principal) -> DocumentOrigin:
    """The origin a new document gets when ``principal`` uploads it."""
    return DocumentOrigin.PATIENT if acts_as_patient(principal) else DocumentOrigin.STAFF


def may_change(principal: Principal, document: Document) -> bool:
    """Whether ``principal`` may add a version to, or edit, a document it already reaches."""
    if not acts_as_patient(principal):
        return True
    return (
        document.origin == DocumentOrigin.PATIENT
        and principal.patient_id is not None
        and document.patient_id == principal.patient_id
    )


def require_change(principal: Principal, document: Document) -> None:
    """Refuse (403, audited as ``access.denied``) unless ``may_change``."""
    if may_change(principal, document):
        return
    problem = StaffAuthoredDocument(
        N_(
            "Patients may add versions to, or change, only documents they uploaded themselves; "
            "ask your care team to update this one."
        )
    )
    raise denied(
        problem,
        Denial(
            principal,
            "Document",
            document.id,
            document.patient_id,
            Permission.DOCUMENT_WRITE.value,
        ),
    )
