"""Preview, then "Confirm & upload" exactly the bytes that were previewed, statelessly.

Design: **deterministic re-rendering plus a hash check**, not a server-side preview store.

1. Preview: ``render_preview`` stamps ``created_at`` (now, whole seconds, UTC), renders,
   and returns the PDF and its SHA-256. The portal shows the PDF and puts
   ``confirmation_fields(...)`` (the draft as form fields, ``created_at`` and the SHA-256)
   into hidden inputs of the confirm form.
2. Confirm: ``parse_confirmation`` reads that post back and refuses a stamp older than
   ``PREVIEW_TTL``; the portal loads the patient again (through the access policy) and
   ``confirm`` re-renders from the same inputs and compares the SHA-256 with the one the
   user previewed. Equal means byte-identical, so those bytes are what gets stored.
   Anything that changed in between (the patient record, the author's name, the vault
   name, the reportlab version in a rolling deploy) changes the bytes, and confirm
   refuses with ``PreviewChanged`` instead of storing something nobody looked at.

Why not keep the preview bytes on the server until confirm: app instances are stateless
behind a load balancer (see ARCHITECTURE "Scaling out"), so the confirm request may reach
an instance that never saw the preview. A temp file in the data dir works only with a
shared data dir or sticky sessions, needs expiry sweeping and per-user binding, and holds
patient data in plaintext outside the encrypted blob store. Re-rendering needs no shared
state, leaves nothing behind, and takes tens of milliseconds.

What the hidden fields can and cannot do: the client could edit them, but the server
renders every byte itself from a draft that passes full validation, and authorises the
patient and the author at confirm time; editing the draft and the hash together just
means confirming a document that was not previewed, which the user could also get by
previewing it. ``created_at`` is bounded to the last ``PREVIEW_TTL`` (plus clock skew
between instances), so it cannot be used to backdate a document.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from medvault.documents.compose.draft import ClinicalDocumentDraft
from medvault.documents.compose.form import parse_form, to_form
from medvault.documents.compose.pdf import render_pdf
from medvault.documents.filenames import sanitize_filename
from medvault.kit.clock import utcnow
from medvault.kit.i18n import N_, msg
from medvault.kit.problems import BadRequest, Conflict
from medvault.patients.schemas import PatientOut

PREVIEW_TTL = timedelta(minutes=15)
# Instances' clocks differ a little; a stamp from a neighbour slightly ahead is still fine.
CLOCK_SKEW = timedelta(minutes=1)
CREATED_AT_FIELD = "preview_created_at"
SHA256_FIELD = "preview_sha256"
PDF_CONTENT_TYPE = "application/pdf"
_SHA256 = re.compile(r"[0-9a-f]{64}")


class PreviewExpired(Conflict):
    slug, title = "preview-expired", N_("The preview is too old to confirm")


class PreviewChanged(Conflict):
    slug, title = "preview-changed", N_("The document no longer matches the preview")


class PreviewStampInvalid(BadRequest):
    slug, title = "preview-stamp-invalid", N_("The confirmation does not carry a valid preview")


@dataclass(frozen=True)
class RenderedDocument:
    """A rendered PDF with everything needed to store it or to render it again."""

    draft: ClinicalDocumentDraft
    created_at: datetime
    pdf: bytes
    sha256: str

    @property
    def filename(self) -> str:
        """A file name for the upload, e.g. ``Consult note - Follow-up.pdf``."""
        # Slashes in a title are not path separators here; left in, the sanitiser would
        # keep only the part after the last one and drop the document type.
        title = self.draft.title.replace("/", "-").replace("\\", "-")
        return sanitize_filename(
            f"{self.draft.document_type_label} - {title}.pdf", extension=".pdf"
        )


@dataclass(frozen=True)
class Confirmation:
    """What a confirm post claims was previewed; not trusted until ``confirm`` checks it."""

    draft: ClinicalDocumentDraft
    created_at: datetime
    sha256: str


def _render(
    draft: ClinicalDocumentDraft,
    created_at: datetime,
    *,
    patient: PatientOut,
    author_name: str,
    vault_name: str,
) -> RenderedDocument:
    pdf = render_pdf(
        draft,
        patient=patient,
        author_name=author_name,
        created_at=created_at,
        vault_name=vault_name,
    )
    return RenderedDocument(
        draft=draft, created_at=created_at, pdf=pdf, sha256=hashlib.sha256(pdf).hexdigest()
    )


def render_preview(
    *,
    draft: ClinicalDocumentDraft,
    patient: PatientOut,
    author_name: str,
    vault_name: str,
    now: datetime | None = None,
) -> RenderedDocument:
    """Render the preview, stamped now (whole seconds: the stamp travels as text)."""
    created_at = (now or utcnow()).astimezone(UTC).replace(microsecond=0)
    return _render(
        draft, created_at, patient=patient, author_name=author_name, vault_name=vault_name
    )


def confirmation_fields(rendered: RenderedDocument) -> dict[str, str]:
    """Hidden inputs for the confirm form; "Edit" can post the same values to the form."""
    return {
        **to_form(rendered.draft),
        CREATED_AT_FIELD: rendered.created_at.isoformat(),
        SHA256_FIELD: rendered.sha256,
    }


def _stamp(raw: object, now: datetime) -> datetime:
    if not isinstance(raw, str):
        raise PreviewStampInvalid(N_("The confirmation has no preview time; preview again."))
    try:
        created_at = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise PreviewStampInvalid(N_("The preview time is not valid; preview again.")) from None
    if created_at.tzinfo is None or created_at.microsecond:
        raise PreviewStampInvalid(N_("The preview time is not valid; preview again."))
    created_at = created_at.astimezone(UTC)
    if created_at > now + CLOCK_SKEW:
        raise PreviewStampInvalid(N_("The preview time is in the future; preview again."))
    if now - created_at > PREVIEW_TTL:
        minutes = int(PREVIEW_TTL.total_seconds() // 60)
        raise PreviewExpired(
            msg(
                "Previews can be confirmed for {minutes} minutes; preview the document again.",
                minutes=minutes,
            )
        )
    return created_at


def parse_confirmation(form: Mapping[str, object], *, now: datetime | None = None) -> Confirmation:
    """Read a confirm post: ``DraftInvalid``, ``PreviewStampInvalid`` or ``PreviewExpired``.

    The stamp is checked first, so an expired preview is reported as such even when the
    validation rules changed in between.
    """
    created_at = _stamp(form.get(CREATED_AT_FIELD), (now or utcnow()).astimezone(UTC))
    sha256 = form.get(SHA256_FIELD)
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256.strip().lower()):
        raise PreviewStampInvalid(N_("The confirmation has no valid preview checksum."))
    return Confirmation(
        draft=parse_form(form), created_at=created_at, sha256=sha256.strip().lower()
    )


def confirm(
    confirmation: Confirmation, *, patient: PatientOut, author_name: str, vault_name: str
) -> RenderedDocument:
    """Render again and return the bytes only if they are exactly the previewed ones.

    Store ``.pdf`` as ``application/pdf`` with ``draft.document_type``, ``draft.title``
    and ``.filename``. ``patient`` must be the draft's patient, loaded at confirm time.
    """
    if patient.id != confirmation.draft.patient_id:
        raise ValueError("patient is not the draft's patient")
    rendered = _render(
        confirmation.draft,
        confirmation.created_at,
        patient=patient,
        author_name=author_name,
        vault_name=vault_name,
    )
    # A plain comparison: the hash is not a secret, it names the bytes the user saw.
    if rendered.sha256 != confirmation.sha256:
        raise PreviewChanged(
            N_(
                "Something in the document changed after it was previewed (for example the "
                "patient's details); preview it again and check it before confirming."
            )
        )
    return rendered
