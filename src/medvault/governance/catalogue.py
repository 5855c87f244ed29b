"""The schedule in force, as the API shows it."""

from __future__ import annotations

from medvault.governance.schedule import Schedule
from medvault.governance.schemas import RetentionClassList, RetentionClassOut, RuleOut


def describe_schedule(schedule: Schedule) -> RetentionClassList:
    return RetentionClassList(
        items=[
            RetentionClassOut(
                name=retention_class.name,
                label=retention_class.label,
                citation=retention_class.citation,
                rules=[
                    RuleOut(
                        when=rule.when.value,
                        after={term.anchor.value: term.years for term in rule.terms},
                    )
                    for rule in retention_class.rules
                ],
                document_types=sorted(
                    code for code, name in schedule.types.items() if name == retention_class.name
                ),
                default=retention_class.name == schedule.default,
            )
            for retention_class in schedule.classes.values()
        ]
    )
