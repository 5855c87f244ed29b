"""A patient's documents as a timeline: months, newest first, and within a month by type."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Generic, Protocol, TypeVar

from babel.dates import format_date

from medvault.kit import i18n


class Dated(Protocol):
    """What grouping needs of a document (the portal passes ``DocumentOut``)."""

    @property
    def created_at(self) -> datetime: ...

    @property
    def document_type(self) -> str: ...


D = TypeVar("D", bound=Dated)


@dataclass
class TypeGroup(Generic[D]):
    label: str
    documents: list[D] = field(default_factory=list)


@dataclass
class Month(Generic[D]):
    key: str  # "2026-12": an id for the heading, never shown
    label: str  # "December 2026"
    types: list[TypeGroup[D]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(len(group.documents) for group in self.types)


def group(
    documents: Iterable[D], *, zone: tzinfo, type_label: Callable[[str], str]
) -> list[Month[D]]:
    """Months in the order the documents come (newest first); types alphabetically.

    A document belongs to the month of its date in the reader's zone: a letter filed at
    00:30 on 1 December in London is December's, although it is 30 November in UTC.
    """
    months: dict[str, Month[D]] = {}
    groups: dict[tuple[str, str], TypeGroup[D]] = {}
    for document in documents:
        created = document.created_at
        # Every stored time is UTC; SQLite hands it back without saying so.
        local = (created if created.tzinfo else created.replace(tzinfo=UTC)).astimezone(zone)
        key = f"{local:%Y-%m}"
        month = months.get(key)
        if month is None:
            label = format_date(local.date(), "LLLL y", locale=i18n.babel_locale())
            month = months[key] = Month[D](key, label)
        label = type_label(document.document_type)
        type_group = groups.get((key, label))
        if type_group is None:
            type_group = groups[(key, label)] = TypeGroup[D](label)
            month.types.append(type_group)
        type_group.documents.append(document)
    for month in months.values():
        month.types.sort(key=lambda group: group.label)
    return list(months.values())
