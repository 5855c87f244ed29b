"""The one access policy: who may do what, and which documents a caller can see.

Every route that touches patients or documents asks here, and every document list
query is built from :func:`readable_documents`, so an unscoped query has to be
written on purpose. Today only service accounts exist (API tokens); users with
roles and care teams plug in here without changing the call sites.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import Select, false, select

from medvault.auth.principal import Principal, Role
from medvault.documents.models import Document
from medvault.kit.problems import Forbidden


class Permission(StrEnum):
    PATIENT_READ = "patients:read"
    PATIENT_WRITE = "patients:write"
    DOCUMENT_READ = "documents:read"
    DOCUMENT_WRITE = "documents:write"
    DOCUMENT_DELETE = "documents:delete"
    CONTENT_READ = "documents:content"
    AUDIT_READ = "audit:read"
    USERS_ADMIN = "users:admin"


def _has_scope(principal: Principal, permission: Permission) -> bool:
    return "*" in principal.scopes or permission.value in principal.scopes


def allows(principal: Principal, permission: Permission) -> bool:
    if principal.role is Role.SERVICE:
        return _has_scope(principal, permission)
    return False


def require(principal: Principal, permission: Permission) -> None:
    if not allows(principal, permission):
        raise Forbidden(f"This credential may not {permission.value.replace(':', ' ')}.")


def readable_documents(principal: Principal) -> Select[Document]:
    """The base query for every document lookup and listing done for ``principal``."""
    query = select(Document)
    if allows(principal, Permission.DOCUMENT_READ):
        return query
    return query.where(false())
