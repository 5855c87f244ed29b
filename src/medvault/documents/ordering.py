"""The orders a document listing can be sorted in, each with its keyset column.

Every order ends with the document id as a tie-breaker, so keyset pagination is
total: no row is skipped or repeated across pages, whatever the sort.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, func

from medvault.documents.models import Document, DocumentVersion
from medvault.kit.keyset import SortValue


class DocumentSort(StrEnum):
    NEWEST = "newest"
    OLDEST = "oldest"
    TITLE = "title"
    TITLE_DESC = "title-desc"
    LARGEST = "largest"
    SMALLEST = "smallest"
    TYPE = "type"


@dataclass(frozen=True)
class SortSpec:
    column: ColumnElement[Any]
    descending: bool
    kind: type[SortValue]
    # The row's value of ``column``, computed in Python for the next cursor.
    value_of: Callable[[Document, DocumentVersion], SortValue]


def _created(document: Document, version: DocumentVersion) -> SortValue:
    return document.created_at


def _title(document: Document, version: DocumentVersion) -> SortValue:
    return document.title.lower()


def _size(document: Document, version: DocumentVersion) -> SortValue:
    return version.size


def _type(document: Document, version: DocumentVersion) -> SortValue:
    return document.document_type


# Titles sort case-insensitively, as a person reading the table expects.
_TITLE = func.lower(Document.title)

SORTS: dict[DocumentSort, SortSpec] = {
    DocumentSort.NEWEST: SortSpec(Document.created_at.expression, True, datetime, _created),
    DocumentSort.OLDEST: SortSpec(Document.created_at.expression, False, datetime, _created),
    DocumentSort.TITLE: SortSpec(_TITLE, False, str, _title),
    DocumentSort.TITLE_DESC: SortSpec(_TITLE, True, str, _title),
    DocumentSort.LARGEST: SortSpec(DocumentVersion.size.expression, True, int, _size),
    DocumentSort.SMALLEST: SortSpec(DocumentVersion.size.expression, False, int, _size),
    DocumentSort.TYPE: SortSpec(Document.document_type.expression, False, str, _type),
}
