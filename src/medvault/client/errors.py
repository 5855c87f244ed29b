"""What the SDK raises: the server's problems, and failures on the way."""

from __future__ import annotations

from typing import Any

import httpx


class VaultClientError(Exception):
    """Base class of every error this SDK raises."""


class VaultError(VaultClientError):
    """The server answered with an RFC 9457 problem (or another error status)."""

    def __init__(
        self,
        status: int,
        problem_type: str,
        title: str,
        detail: str | None,
        extensions: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{title} ({status})" + (f": {detail}" if detail else ""))
        self.status = status
        self.problem_type = problem_type
        self.title = title
        self.detail = detail
        self.extensions = extensions or {}


class VaultConnectionError(VaultClientError):
    """No connection to the vault could be made (refused, DNS, TLS, connect timeout)."""


class VaultTransferError(VaultClientError):
    """A transfer broke off or its bytes failed verification; nothing was kept."""


class VaultSourceError(VaultClientError):
    """The file being uploaded changed (it shrank) while it was read."""


def problem_from(response: httpx.Response) -> VaultError:
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and ("title" in body or "type" in body):
        extensions = {
            k: v for k, v in body.items() if k not in ("type", "title", "status", "detail")
        }
        return VaultError(
            status,
            str(body.get("type", "about:blank")),
            str(body.get("title") or response.reason_phrase),
            str(body["detail"]) if body.get("detail") is not None else None,
            extensions,
        )
    # Not a problem document (a proxy's HTML error page, say): keep a short excerpt.
    excerpt = response.text.strip()[:200] or None
    return VaultError(status, "about:blank", response.reason_phrase or "Error", excerpt)
