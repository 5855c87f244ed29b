"""Retention rules compute the NHS Code's dates (table-driven), and retention files parse."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from medvault.governance.schedule import (
    NHS_PRESET,
    RecordDates,
    ScheduleError,
    add_years,
    load,
)

D = date


@pytest.mark.parametrize(
    ("case", "class_name", "dates", "expected"),
    [
        # Adult: 8 years after the end of treatment (the last entry when none is given).
        (
            "adult, last entry",
            "adult",
            RecordDates(birth=D(1970, 5, 1), last_entry=D(2020, 3, 4)),
            D(2028, 3, 4),
        ),
        (
            "adult, treatment end given",
            "adult",
            RecordDates(D(1970, 5, 1), D(2021, 1, 1), treatment_ended=D(2019, 6, 30)),
            D(2027, 6, 30),
        ),
        # Children: the 25th birthday; the 26th if 17 when treatment ended.
        ("child at 10", "child", RecordDates(D(2010, 7, 15), D(2020, 9, 1)), D(2035, 7, 15)),
        ("child at 17", "child", RecordDates(D(2003, 7, 15), D(2021, 1, 10)), D(2029, 7, 15)),
        (
            "child, 17 the day before their birthday",
            "child",
            RecordDates(D(2003, 7, 15), D(2021, 7, 14)),
            D(2029, 7, 15),
        ),
        (
            "child, 18 on the day",
            "child",
            RecordDates(D(2003, 7, 15), D(2021, 7, 15)),
            D(2028, 7, 15),
        ),
        (
            "child who died",
            "child",
            RecordDates(D(2010, 1, 1), D(2015, 1, 1), death=D(2015, 2, 1)),
            D(2023, 2, 1),
        ),
        # The default class picks child or adult from the age at the end of treatment.
        (
            "health record, adult",
            "health-record",
            RecordDates(D(1960, 1, 1), D(2020, 1, 1)),
            D(2028, 1, 1),
        ),
        (
            "health record, 17",
            "health-record",
            RecordDates(D(2003, 7, 15), D(2021, 1, 10)),
            D(2029, 7, 15),
        ),
        (
            "health record, 9",
            "health-record",
            RecordDates(D(2011, 7, 15), D(2021, 1, 10)),
            D(2036, 7, 15),
        ),
        (
            "health record, died",
            "health-record",
            RecordDates(D(1950, 1, 1), D(2019, 1, 1), death=D(2020, 3, 1)),
            D(2028, 3, 1),
        ),
        # Mental health: 20 years after treatment, or 10 after death if sooner.
        (
            "mental health, alive",
            "mental-health",
            RecordDates(D(1980, 1, 1), D(2010, 5, 5)),
            D(2030, 5, 5),
        ),
        (
            "mental health, died soon after",
            "mental-health",
            RecordDates(D(1980, 1, 1), D(2010, 5, 5), death=D(2011, 1, 1)),
            D(2021, 1, 1),
        ),
        (
            "mental health, died long after",
            "mental-health",
            RecordDates(D(1940, 1, 1), D(2000, 5, 5), death=D(2018, 1, 1)),
            D(2020, 5, 5),
        ),
        ("maternity", "maternity", RecordDates(D(1990, 1, 1), D(2015, 8, 20)), D(2040, 8, 20)),
        # GP records: kept while the patient lives, 10 years after death.
        ("GP, alive", "gp-record", RecordDates(D(1950, 1, 1), D(2020, 1, 1)), None),
        (
            "GP, died",
            "gp-record",
            RecordDates(D(1950, 1, 1), D(2020, 1, 1), death=D(2021, 4, 2)),
            D(2031, 4, 2),
        ),
    ],
)
def test_nhs_classes_compute_the_codes_dates(
    case: str, class_name: str, dates: RecordDates, expected: date | None
) -> None:
    assert NHS_PRESET.classes[class_name].retain_until(dates) == expected, case


def test_29_february_lands_on_28_february_in_a_common_year() -> None:
    assert add_years(D(2020, 2, 29), 8) == D(2028, 2, 29)
    assert add_years(D(2020, 2, 29), 1) == D(2021, 2, 28)


def test_unmapped_types_fall_in_the_default_class_and_mapped_types_in_theirs() -> None:
    assert NHS_PRESET.class_for("18842-5").name == "health-record"
    assert NHS_PRESET.class_for("11510-5").name == "mental-health"


def test_a_retention_file_adds_classes_and_maps_types(tmp_path: Path) -> None:
    path = tmp_path / "retention.toml"
    path.write_text(
        """
default = "adult"
[types]
"57057-2" = "maternity"
"34109-9" = "short"

[classes.short]
label = "Administrative correspondence"
citation = "Local policy 12"
rules = [{ when = "deceased", after = { death = 1 } }, { after = { last_entry = 2 } }]
"""
    )
    schedule = load(path)
    assert schedule.class_for("57057-2").name == "maternity"
    assert schedule.class_for("11506-3").name == "adult"
    short = schedule.class_for("34109-9")
    assert short.label == "Administrative correspondence"
    assert short.retain_until(RecordDates(D(1990, 1, 1), D(2020, 1, 1))) == D(2022, 1, 1)
    died = RecordDates(D(1990, 1, 1), D(2020, 1, 1), death=D(2020, 6, 1))
    assert short.retain_until(died) == D(2021, 6, 1)
    # The preset's classes stay available beside the file's own.
    assert "mental-health" in schedule.classes


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ('[types]\n"1-1" = "nonesuch"\n', "no retention class 'nonesuch'"),
        ('default = "nonesuch"\n', "no retention class 'nonesuch'"),
        ("[classes.x]\nrules = [{ after = { yesterday = 3 } }]\n", "classes.x.rules[0]"),
        (
            '[classes.x]\nrules = [{ when = "sometimes", after = { death = 3 } }]\n',
            "classes.x.rules[0]",
        ),
        ("[classes.x]\nrules = [{ after = {} }]\n", "at least one term"),
        ("[classes.x]\nrules = [{ after = { death = -1 } }]\n", "at least one term"),
        ("not toml = = =\n", "retention.toml"),
    ],
)
def test_a_bad_retention_file_is_refused_with_where(
    tmp_path: Path, text: str, complaint: str
) -> None:
    path = tmp_path / "retention.toml"
    path.write_text(text)
    with pytest.raises(ScheduleError, match=complaint.replace("[", r"\[").replace("]", r"\]")):
        load(path)
