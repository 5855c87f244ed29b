"""Running client commands in-process, as tests in this package do."""

from __future__ import annotations

import uuid

from typer.testing import CliRunner, Result

from medvault.cli.app import app as cli
from tests.support.factories import NHS_SYSTEM


def run(*args: str, env: dict[str, str]) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


def assert_clean_failure(result: Result, *phrases: str) -> None:
    """Exit 1 with a human message on stderr: no traceback, nothing on stdout."""
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert "Traceback" not in result.output
    for phrase in phrases:
        assert phrase in result.stderr


def add_patient(env: dict[str, str]) -> str:
    result = run(
        "patient",
        "add",
        "--system",
        NHS_SYSTEM,
        "--value",
        f"9{uuid.uuid4().int % 10**9:09d}",
        "--family",
        "Testperson",
        "--given",
        "Synthetic",
        "--birth-date",
        "1980-02-29",
        env=env,
    )
    assert result.exit_code == 0, result.output
    return str(uuid.UUID(result.stdout.strip()))
