"""The one way a request's path gets into a log line.

Some paths are credentials (a signed download link carries its token in the path),
and query strings can carry identifiers (an NHS number in ``?identifier=``) or
search words that are patient data. Every logger that mentions a request calls
``loggable_path`` instead of formatting ``request.url`` itself, so a new handler
cannot forget one of the rules.
"""

from __future__ import annotations

import re

# Paths whose tail is a bearer credential: the whole tail goes.
_CREDENTIAL_PREFIXES = ("/api/v1/download/", "/api/v1/exports/download/")
# A path segment that looks like a secret (long, high-entropy, URL-safe) is hidden
# too, so a credential route added later is not logged in full before someone
# remembers to list it above. Ids (UUIDs, small integers) stay: they are opaque.
_SECRET_LIKE = re.compile(r"^(?=.*[A-Za-z])(?=.*[0-9_-])[A-Za-z0-9_.~-]{40,}$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
MAX_LOGGED_PATH = 200
REDACTED = "<redacted>"


def loggable_path(path: str) -> str:
    """``path`` without query, credentials or secret-looking segments, length-capped."""
    path = path.split("?", 1)[0]
    for prefix in _CREDENTIAL_PREFIXES:
        if path.startswith(prefix):
            return prefix + "<signed>"
    segments = [
        REDACTED if _SECRET_LIKE.match(segment) and not _UUID.match(segment) else segment
        for segment in path.split("/")
    ]
    cleaned = "/".join(segments)
    if len(cleaned) > MAX_LOGGED_PATH:
        # Oversized paths are attacks or mistakes; their tail is never needed to debug.
        cleaned = cleaned[:MAX_LOGGED_PATH] + "…"
    return cleaned
