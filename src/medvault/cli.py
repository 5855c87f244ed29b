"""The ``medvault`` command: server operations and a client for the REST API."""

from __future__ import annotations

import logging

import typer
from rich.console import Console

from medvault.config import ConfigurationError, Settings

app = typer.Typer(no_args_is_help=True, help="medvault: an encrypted clinical document vault.")
token_app = typer.Typer(no_args_is_help=True, help="API tokens.")
app.add_typer(token_app, name="token")

err = Console(stderr=True)


def _settings() -> Settings:
    return Settings()


@app.command()
def serve(
    host: str | None = typer.Option(None, help="Bind address (default MEDVAULT_HOST)"),
    port: int | None = typer.Option(None, help="Port (default MEDVAULT_PORT)"),
) -> None:
    """Apply migrations and run the vault."""
    import uvicorn

    from medvault.app import create_app

    settings = _settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        application = create_app(settings)
    except ConfigurationError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    bind_host, bind_port = host or settings.host, port if port is not None else settings.port
    err.print(f"medvault listening on http://{bind_host}:{bind_port}  (API docs: /docs)")
    uvicorn.run(application, host=bind_host, port=bind_port, log_level="warning",
                access_log=False)


@app.command()
def migrate() -> None:
    """Apply database migrations to both databases, then exit."""
    from medvault.runtime import build_runtime

    runtime = build_runtime(_settings(), run_migrations=True)
    runtime.close()
    err.print("migrations applied")


@token_app.command("create")
def token_create(name: str = typer.Option(..., "--name", help="Who or what the token is for")) -> None:
    """Print a new admin API token on stdout (it is shown once and stored only as a hash)."""
    from medvault.auth.service import create_api_token
    from medvault.runtime import build_runtime

    runtime = build_runtime(_settings(), run_migrations=True)
    try:
        with runtime.auth.session() as session:
            issued = create_api_token(session=session, name=name)
            session.commit()
    finally:
        runtime.close()
    typer.echo(issued.token)


if __name__ == "__main__":
    app()
