"""IANA time zone names that arrive from outside (a browser, a setting), checked first.

Only names in the system's tz database are accepted: ``ZoneInfo`` alone would try any
path-like string a client posts. Even ``available_timezones()`` lists a few files that
are not zones a person lives in (Debian's ``localtime`` link to the host's own zone,
``posixrules``, ``Factory``, the ``posix/`` and ``right/`` copies); those are left out.
"""

from __future__ import annotations

import functools
import zoneinfo

MAX_NAME_LENGTH = 64  # the longest IANA name today is 32 characters
_NOT_PLACES = frozenset({"localtime", "posixrules", "Factory"})


@functools.cache
def _known() -> frozenset[str]:
    # Walks the tz database once (tens of milliseconds); the set never changes while
    # the process runs.
    return frozenset(
        name
        for name in zoneinfo.available_timezones()
        if name not in _NOT_PLACES and not name.startswith(("posix/", "right/"))
    )


def known_zone(name: str | None) -> zoneinfo.ZoneInfo | None:
    """The zone called ``name``, or None if that is not an IANA time zone name."""
    if not name or len(name) > MAX_NAME_LENGTH or name not in _known():
        return None
    return zoneinfo.ZoneInfo(name)
