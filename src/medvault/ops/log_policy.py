"""What may reach the log, decided once for the whole process.

SQLAlchemy logs through the standard ``logging`` tree: when its loggers are left at
NOTSET they inherit the root's level, so ``MEDVAULT_LOG_LEVEL=DEBUG`` alone would
make it write every bound parameter (at INFO) and every result row (at DEBUG), which
are names, birth dates and titles. Its loggers are therefore pinned to WARNING
unless an operator has set a level on them on purpose (a logging config that asks
for SQL echo gets it, knowingly). Paths in log lines go through
``kit.redaction.loggable_path``.
"""

from __future__ import annotations

import logging

from medvault.kit.redaction import loggable_path

PINNED_LOGGERS = ("sqlalchemy.engine", "sqlalchemy.pool", "sqlalchemy.orm", "sqlalchemy.dialects")


class UvicornAccessRedaction(logging.Filter):
    """Rewrites uvicorn's access-log path (with its query string) through ``loggable_path``.

    ``medvault serve`` turns uvicorn's access log off and writes its own, but uvicorn
    emits it again as soon as any handler is attached to ``uvicorn.access`` (an
    operator's logging config, a log shipper), with the raw path and query: signed
    links and search words included.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        # uvicorn: '%s - "%s %s HTTP/%s" %d' % (client, method, path_with_query, version, status)
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], loggable_path(args[2]), *args[3:])
        return True


def apply_log_policy() -> None:
    """Pin the loggers that would echo database content to WARNING, and redact
    uvicorn's access lines (see the module and class docstrings)."""
    for name in PINNED_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(existing, UvicornAccessRedaction) for existing in access.filters):
        access.addFilter(UvicornAccessRedaction())
