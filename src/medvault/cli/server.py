"""``medvault serve`` and ``medvault migrate``: run the vault where its configuration is."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from medvault.cli.console import err, fail, open_runtime, own_command
from medvault.config import ConfigurationError, Settings

if TYPE_CHECKING:
    from medvault.runtime import Runtime


def serve(
    host: str | None = typer.Option(None, help="Bind address (default MEDVAULT_HOST)"),
    port: int | None = typer.Option(None, help="Port (default MEDVAULT_PORT)"),
    ssl_certfile: Path | None = typer.Option(
        None, "--ssl-certfile", exists=True, dir_okay=False, help="TLS certificate (PEM)"
    ),
    ssl_keyfile: Path | None = typer.Option(
        None, "--ssl-keyfile", exists=True, dir_okay=False, help="TLS private key (PEM)"
    ),
    workers: int | None = typer.Option(
        None,
        min=1,
        max=64,
        help="Server processes (default MEDVAULT_SERVER_WORKERS, else one per CPU core)",
    ),
) -> None:
    """Apply migrations and run the vault (over TLS when given a certificate and key)."""
    import uvicorn

    from medvault.app import create_app
    from medvault.kit.allocator import keep_buffers_mapped
    from medvault.kit.private_files import exposure_warning
    from medvault.ops.server import uvicorn_options

    # Belt and braces to the explicit modes in kit.private_files: anything else this
    # process writes (a library's temp file, a SQLite journal) is owner-only too.
    os.umask(0o077)
    keep_buffers_mapped()
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    exposure = exposure_warning(settings.resolved_data_dir)
    if exposure:
        err.print(f"[yellow]warning:[/yellow] {escape(exposure)}")
    if (ssl_certfile is None) != (ssl_keyfile is None):
        fail("Give both --ssl-certfile and --ssl-keyfile, or neither.", code=2)
    processes = workers or settings.effective_server_workers
    # Migrations, keys and the first users, once, before any server process starts.
    runtime = open_runtime(settings, run_migrations=True)
    _announce_first_users(runtime)
    bind_host, bind_port = host or settings.host, port if port is not None else settings.port
    scheme = "https" if ssl_certfile else "http"
    common = {
        "host": bind_host,
        "port": bind_port,
        "log_level": "warning",
        "access_log": False,
        "ssl_certfile": str(ssl_certfile) if ssl_certfile else None,
        "ssl_keyfile": str(ssl_keyfile) if ssl_keyfile else None,
        **uvicorn_options(settings),
    }
    err.print(
        f"medvault listening on {scheme}://{bind_host}:{bind_port}/ with {processes} "
        f"server process{'es' if processes > 1 else ''}  "
        "(portal: open it in a browser; API docs: /docs)"
    )
    if processes == 1:
        application = create_app(
            runtime=runtime, run_sealer=True, run_worker=settings.embedded_worker
        )
        uvicorn.run(application, **common)
        return
    from medvault.ops.server import GuardedHttpProtocol
    from medvault.ops.server_processes import supervisor_environment

    runtime.close()  # each process opens its own; none is shared across the spawn
    with supervisor_environment(processes):
        uvicorn.run(
            "medvault.ops.server_processes:child_app",
            factory=True,
            workers=processes,
            **(common | {"http": GuardedHttpProtocol}),
        )


def _announce_first_users(runtime: Runtime) -> None:
    """On an empty vault, create the first admin (and, outside production, a clinician)
    and show their passwords once, on a terminal only."""
    from medvault.auth.bootstrap import ensure_first_admin, ensure_first_clinician

    try:
        admin = ensure_first_admin(runtime)
    except ConfigurationError as exc:  # e.g. a configured password that is too short
        fail(str(exc), code=2)
    clinician = ensure_first_clinician(runtime)
    created = [(name, pw) for name, pw in (("admin", admin), ("clinician", clinician)) if pw]
    if not created:
        return
    if sys.stderr.isatty():
        for name, password in created:
            err.print(
                f"Created user [bold]{name}[/bold] with password [bold]{escape(password)}[/bold]"
                " (shown once)."
            )
        if clinician:
            err.print(
                "Log in to the portal as [bold]clinician[/bold] to register a patient and "
                "file documents; [bold]admin[/bold] manages users and care teams."
            )
    else:
        # Container and service logs are kept and shipped: never write a password there.
        names = " and ".join(name for name, _ in created)
        err.print(
            f"Created {names} with random passwords that are not shown because this is not "
            f"a terminal. Set them with: {own_command()} user password <username>"
        )


def migrate() -> None:
    """Apply database migrations to the three databases, then exit.

    A clinical database from before the patient database has its patients copied
    to the patient database, checked, and only then removed from it.
    """
    open_runtime(Settings(), run_migrations=True).close()
    err.print("migrations applied")
