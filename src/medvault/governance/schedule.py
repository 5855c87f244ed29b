"""Retention schedules: which class a document falls in, and the date it may go.

A **class** is an ordered list of rules; the first rule whose condition holds *and*
whose anchors are known decides. A rule's date is the earliest of its terms, each term
"N years after an anchor date". Anchors are dates the vault knows or is given:

* ``last_entry``: the newest entry in the patient's record (a document or version);
* ``end_of_treatment``: given on the patient (``treatment_ended_on``), else the last entry;
* ``birth`` and ``death``: the patient's birth date and date of death.

When no rule applies (a GP record of a living patient, say) the answer is ``None``:
keep indefinitely. An unknown is never read as "may be destroyed".

The NHS Records Management Code of Practice classes ship as :data:`NHS_PRESET`;
a deployment replaces or extends them with a TOML file (``MEDVAULT_RETENTION_FILE``,
format in the README's "Records governance").
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Any


class Anchor(StrEnum):
    LAST_ENTRY = "last_entry"
    END_OF_TREATMENT = "end_of_treatment"
    BIRTH = "birth"
    DEATH = "death"


class Condition(StrEnum):
    ALWAYS = "always"
    DECEASED = "deceased"
    ALIVE = "alive"
    # Age at the end of treatment (or at the last entry), in whole years.
    MINOR_AT_END = "minor_at_end"  # under 18
    AGED_17_AT_END = "aged_17_at_end"


@dataclass(frozen=True)
class RecordDates:
    """What a rule may look at, for one patient's record."""

    birth: date
    last_entry: date
    treatment_ended: date | None = None
    death: date | None = None

    def anchor(self, anchor: Anchor) -> date | None:
        match anchor:
            case Anchor.LAST_ENTRY:
                return self.last_entry
            case Anchor.END_OF_TREATMENT:
                return self.treatment_ended or self.last_entry
            case Anchor.BIRTH:
                return self.birth
            case Anchor.DEATH:
                return self.death

    def age_at_end(self) -> int:
        end = self.treatment_ended or self.last_entry
        return (
            end.year - self.birth.year - ((end.month, end.day) < (self.birth.month, self.birth.day))
        )

    def holds(self, condition: Condition) -> bool:
        match condition:
            case Condition.ALWAYS:
                return True
            case Condition.DECEASED:
                return self.death is not None
            case Condition.ALIVE:
                return self.death is None
            case Condition.MINOR_AT_END:
                return self.age_at_end() < 18
            case Condition.AGED_17_AT_END:
                return self.age_at_end() == 17


def add_years(day: date, years: int) -> date:
    """``day`` plus whole years; 29 February becomes 28 February in a common year."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


@dataclass(frozen=True)
class Term:
    anchor: Anchor
    years: int

    def describe(self) -> str:
        return f"{self.years}y after {self.anchor.value}"


@dataclass(frozen=True)
class Rule:
    terms: tuple[Term, ...]
    when: Condition = Condition.ALWAYS

    def date_for(self, dates: RecordDates) -> date | None:
        """The earliest term whose anchor is known; ``None`` if none is (rule skipped)."""
        known = [
            add_years(day, term.years)
            for term in self.terms
            if (day := dates.anchor(term.anchor)) is not None
        ]
        return min(known) if known else None

    def describe(self) -> str:
        terms = " or ".join(term.describe() for term in self.terms)
        return terms if self.when is Condition.ALWAYS else f"if {self.when.value}: {terms}"


@dataclass(frozen=True)
class RetentionClass:
    name: str
    label: str
    rules: tuple[Rule, ...]
    citation: str = ""

    def retain_until(self, dates: RecordDates) -> date | None:
        for rule in self.rules:
            if dates.holds(rule.when) and (until := rule.date_for(dates)) is not None:
                return until
        return None

    def describe(self) -> str:
        return "; ".join(rule.describe() for rule in self.rules) or "keep indefinitely"


@dataclass(frozen=True)
class Schedule:
    classes: dict[str, RetentionClass]
    # LOINC document type → class name; anything unlisted falls in ``default``.
    types: dict[str, str] = field(default_factory=dict)
    default: str = "health-record"

    def class_for(self, document_type: str) -> RetentionClass:
        return self.classes[self.types.get(document_type, self.default)]


class ScheduleError(ValueError):
    """A retention file that cannot be a schedule: the vault refuses to start with it."""


def _rule(*terms: tuple[Anchor, int], when: Condition = Condition.ALWAYS) -> Rule:
    return Rule(tuple(Term(anchor, years) for anchor, years in terms), when)


A, C = Anchor, Condition
_CODE = "NHS Records Management Code of Practice 2023, Appendix II"
NHS_CLASSES = (
    RetentionClass(
        "adult",
        "Adult health record",
        (_rule((A.END_OF_TREATMENT, 8)),),
        f"{_CODE}: 8 years after the conclusion of treatment or death",
    ),
    RetentionClass(
        "child",
        "Children's record",
        (
            _rule((A.DEATH, 8), when=C.DECEASED),
            _rule((A.BIRTH, 26), when=C.AGED_17_AT_END),
            _rule((A.BIRTH, 25)),
        ),
        f"{_CODE}: until the 25th birthday, or 26th if 17 at the conclusion of "
        "treatment, or 8 years after death",
    ),
    # The default: a record is a child's if the patient was under 18 when treatment
    # ended, an adult's otherwise; document types carry no age, the dates do.
    RetentionClass(
        "health-record",
        "General health record (child or adult by age)",
        (
            _rule((A.DEATH, 8), when=C.DECEASED),
            _rule((A.BIRTH, 26), when=C.AGED_17_AT_END),
            _rule((A.BIRTH, 25), when=C.MINOR_AT_END),
            _rule((A.END_OF_TREATMENT, 8)),
        ),
        f"{_CODE}: children's records, else adult records",
    ),
    RetentionClass(
        "mental-health",
        "Mental health record",
        (_rule((A.END_OF_TREATMENT, 20), (A.DEATH, 10)),),
        f"{_CODE}: 20 years after no further treatment is necessary, or 10 years "
        "after death if sooner",
    ),
    RetentionClass(
        "maternity",
        "Maternity record",
        (_rule((A.LAST_ENTRY, 25)),),
        f"{_CODE}: 25 years after the birth of the last child",
    ),
    RetentionClass(
        "gp-record",
        "GP patient record",
        (_rule((A.DEATH, 10), when=C.DECEASED),),
        f"{_CODE}: 10 years after death; kept while the patient lives",
    ),
)
NHS_PRESET = Schedule(
    classes={cls.name: cls for cls in NHS_CLASSES},
    types={
        # LOINC document codes with a class of their own in the Code; a deployment
        # maps the rest of its types in its retention file (README, "Records governance").
        "11510-5": "mental-health",  # Psychology progress note
    },
)


def _parse_rule(raw: dict[str, Any], where: str) -> Rule:
    try:
        when = Condition(raw.get("when", "always"))
        terms = tuple(Term(Anchor(anchor), int(years)) for anchor, years in raw["after"].items())
    except (KeyError, ValueError, AttributeError, TypeError) as exc:
        raise ScheduleError(f"{where}: {exc!r}") from None
    if not terms or any(term.years < 0 for term in terms):
        raise ScheduleError(f"{where}: a rule needs at least one term of 0 or more years")
    return Rule(terms, when)


def parse(data: dict[str, Any], *, base: Schedule = NHS_PRESET) -> Schedule:
    """A schedule from a TOML document's data: its classes added to (or replacing) ``base``."""
    classes = dict(base.classes)
    for name, raw in data.get("classes", {}).items():
        if not isinstance(raw, dict):
            raise ScheduleError(f"classes.{name}: expected a table")
        rules = tuple(
            _parse_rule(rule, f"classes.{name}.rules[{i}]")
            for i, rule in enumerate(raw.get("rules", []))
        )
        classes[name] = RetentionClass(
            name, str(raw.get("label", name)), rules, str(raw.get("citation", ""))
        )
    types = {**base.types, **{str(k): str(v) for k, v in data.get("types", {}).items()}}
    default = str(data.get("default", base.default))
    for type_code, class_name in [*types.items(), ("default", default)]:
        if class_name not in classes:
            raise ScheduleError(f"types.{type_code}: no retention class {class_name!r}")
    return Schedule(classes, types, default)


def load(path: Path | None) -> Schedule:
    if path is None:
        return NHS_PRESET
    try:
        return parse(tomllib.loads(path.read_text()))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ScheduleError(f"{path}: {exc}") from None
