"""Fixtures for the tamper-evident audit log: an empty log and the audit API.

Synthetic events and the independent Merkle root are in ``tests/support/audit_log.py``.
"""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from medvault.audit.models import AuditCheckpoint
from medvault.audit.router import router as audit_router
from medvault.runtime import Runtime


@pytest.fixture
def audit_runtime(runtime: Runtime) -> Runtime:
    """A runtime whose audit log is empty (tests/conftest.py cleans the sealing tables too)."""
    with runtime.clinical.read_session() as session:
        assert session.scalar(select(func.count()).select_from(AuditCheckpoint)) == 0
    return runtime


@pytest.fixture
def audit_app(app: FastAPI) -> FastAPI:
    """The app with the audit API, whether or not create_app includes it yet."""
    if not any(getattr(route, "path", "").startswith("/api/v1/audit") for route in app.routes):
        app.include_router(audit_router)
    return app
