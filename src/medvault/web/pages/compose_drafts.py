"""Create document's autosave: the form's fields kept, sealed, while they are written.

portal.js posts the form here every few seconds while it changes (and once more when
the page is hidden), so an idle timeout, a closed tab or a lost connection costs at
most those seconds; ``compose_form`` gives the draft back to its author.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from medvault.access.policy import Permission, require
from medvault.auth.principal import Principal
from medvault.deps import ClinicalSession, RuntimeDep
from medvault.documents.compose import autosave
from medvault.kit.i18n import N_
from medvault.kit.problems import PayloadTooLarge
from medvault.web.session import CsrfChecked, PortalPrincipal, form_data, require_staff

router = APIRouter(prefix="/compose", include_in_schema=False)


class DraftTooLarge(PayloadTooLarge):
    slug, title = "draft-too-large", N_("The draft is larger than any document can be")


def _require_composer(principal: Principal) -> None:
    # Who may write a document at all, and is practice staff: a clinician (the portal
    # matrix's /compose row). An admin reads and deletes but never writes content.
    require(principal, Permission.DOCUMENT_WRITE)
    require_staff(principal)


@router.post("/draft")
async def save_draft(
    request: Request,
    runtime: RuntimeDep,
    session: ClinicalSession,
    principal: PortalPrincipal,
    _csrf: CsrfChecked,
) -> Response:
    """Keep the posted form as this user's draft; answers the time it was saved."""
    _require_composer(principal)
    values = await form_data(request)
    try:
        saved_at = autosave.save(
            session,
            keyring=runtime.current_keyring(),
            user_id=principal.subject_id,
            values=values,
        )
    except autosave.DraftTooLarge as exc:
        # The service's own message (kept as it is, so a translatable one stays so).
        raise DraftTooLarge(exc.args[0] if exc.args else None) from None
    session.commit()
    return JSONResponse({"saved_at": saved_at.isoformat()})


@router.post("/draft/discard")
def discard_draft(
    session: ClinicalSession, principal: PortalPrincipal, _csrf: CsrfChecked
) -> Response:
    """ "Start a new document instead": the draft goes, the empty form comes back."""
    _require_composer(principal)
    autosave.discard(session, user_id=principal.subject_id)
    session.commit()
    return RedirectResponse("/compose", status_code=303)
