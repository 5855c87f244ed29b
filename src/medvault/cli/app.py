"""The root ``medvault`` command: every group and top-level command, mounted in one place.

Client commands (patient, upload, ls, get, rm) talk HTTP through :mod:`medvault.client`.
Server commands open the databases, blob store and keyring directly and must run where
the vault's configuration is. Each domain owns its commands; this module only decides
the names users type and the order ``medvault --help`` lists them in.
"""

from __future__ import annotations

import typer

from medvault.access.cli import careteam_app
from medvault.audit.cli import audit_app
from medvault.auth.cli import token_app, user_app
from medvault.cli import client_commands, server
from medvault.cli.storage import storage_app
from medvault.documents import cli as documents_cli
from medvault.fhir.cli import fhir_app
from medvault.governance.backup.cli import backup_app, restore
from medvault.governance.cli import export_app, retention_app
from medvault.processing import cli as processing_cli
from medvault.processing import derivation_cli

app = typer.Typer(no_args_is_help=True, help="medvault: an encrypted clinical document vault.")

# Help lists top-level commands in registration order, then the groups.
app.command("serve")(server.serve)
app.command("migrate")(server.migrate)
app.command("upload")(client_commands.upload)
app.command("ls")(client_commands.list_documents)
app.command("get")(client_commands.get)
app.command("rm")(client_commands.remove)
app.command("verify")(documents_cli.verify)
app.command("worker")(processing_cli.worker)
app.command("scan")(processing_cli.scan)
app.command("reconcile")(processing_cli.reconcile)
app.command("restore")(restore)

app.add_typer(token_app, name="token")
app.add_typer(user_app, name="user")
app.add_typer(careteam_app, name="careteam")
app.add_typer(audit_app, name="audit")
app.add_typer(client_commands.patient_app, name="patient")
app.add_typer(documents_cli.keys_app, name="keys")
app.add_typer(fhir_app, name="fhir")
app.add_typer(processing_cli.jobs_app, name="jobs")
app.add_typer(derivation_cli.previews_app, name="previews")
app.add_typer(derivation_cli.search_app, name="search")
app.add_typer(retention_app, name="retention")
app.add_typer(export_app, name="export")
app.add_typer(backup_app, name="backup")
app.add_typer(storage_app, name="storage")
