"""Where the FHIR interface lives, as clients see it."""

from __future__ import annotations

from starlette.requests import Request

from medvault.config import Settings

FHIR_PATH = "/fhir"


def base_url(request: Request, settings: Settings) -> str:
    """The FHIR base URL for links and ``fullUrl``s: ``MEDVAULT_PUBLIC_URL`` + ``/fhir``.

    Behind a load balancer the request's own host is an internal name, so the public
    URL wins when it is configured, exactly as for signed download links.
    """
    root = settings.public_url or str(request.base_url)
    return root.rstrip("/") + FHIR_PATH
