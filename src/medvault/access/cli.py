"""Server-side ``medvault careteam …`` commands: who may work on which patients.

They open the vault's databases directly, so they run where the vault's configuration
is, and act as the audit actor ``system:cli``.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from medvault.cli.console import admin_runtime, cli_audit_context, err, id_argument

careteam_app = typer.Typer(no_args_is_help=True, help="Care teams (server side).")

ClinicianOption = Annotated[str, typer.Option("--clinician", help="The clinician's username")]
PatientOption = Annotated[str, typer.Option("--patient", help="Patient id")]


@careteam_app.command("add")
def careteam_add(clinician: ClinicianOption, patient: PatientOption) -> None:
    """Put a clinician on a patient's care team (opens the patient's records to them)."""
    from medvault.access import careteams
    from medvault.audit import service as audit
    from medvault.auth import users

    patient_id = id_argument(patient, kind="patient")
    with (
        admin_runtime() as runtime,
        runtime.auth.read_session() as auth,
        runtime.clinical.session() as db,
    ):
        user = users.get_by_username(session=auth, username=clinician)
        _, created = careteams.add(
            clinical_session=db,
            auth_session=auth,
            clinician_id=user.id,
            patient_id=patient_id,
            context=cli_audit_context(),
        )
        audit.commit_or_refuse(db)
    what = "added" if created else "already on the care team:"
    err.print(f"{what} {escape(user.username)} → patient {patient_id}")


@careteam_app.command("remove")
def careteam_remove(clinician: ClinicianOption, patient: PatientOption) -> None:
    """Take a clinician off a patient's care team."""
    from medvault.access import careteams
    from medvault.audit import service as audit
    from medvault.auth import users

    patient_id = id_argument(patient, kind="patient")
    with (
        admin_runtime() as runtime,
        runtime.auth.read_session() as auth,
        runtime.clinical.session() as db,
    ):
        user = users.get_by_username(session=auth, username=clinician)
        careteams.remove(
            clinical_session=db,
            clinician_id=user.id,
            patient_id=patient_id,
            context=cli_audit_context(),
        )
        audit.commit_or_refuse(db)
    err.print(f"removed {escape(user.username)} from patient {patient_id}")


@careteam_app.command("list")
def careteam_list(
    patient: Annotated[str | None, typer.Option("--patient", help="Only this patient")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line")] = False,
) -> None:
    """List care-team memberships."""
    from medvault.access import careteams

    patient_id = id_argument(patient, kind="patient") if patient else None
    with (
        admin_runtime() as runtime,
        runtime.auth.read_session() as auth,
        runtime.clinical.read_session() as db,
    ):
        entries = careteams.list_members(
            clinical_session=db, auth_session=auth, patient_id=patient_id
        )
    if as_json:
        for entry in entries:
            row = {
                "patient_id": str(entry.patient_id),
                "clinician_id": str(entry.clinician_id),
                "clinician": entry.clinician_username,
                "added_at": entry.added_at.isoformat(),
                "added_by": entry.added_by,
            }
            typer.echo(json.dumps(row))
        return
    if not entries:
        err.print("no care-team members")
        return
    table = Table("Patient", "Clinician", "Added (UTC)", "Added by")
    for entry in entries:
        table.add_row(
            str(entry.patient_id),
            escape(entry.clinician_username or str(entry.clinician_id)),
            f"{entry.added_at:%Y-%m-%d %H:%M}",
            escape(entry.added_by),
        )
    Console(width=200).print(table)
