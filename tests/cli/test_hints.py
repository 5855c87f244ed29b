"""Hints the CLI prints must work when typed exactly as shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from medvault.cli.console import own_command


def test_the_password_hint_names_the_command_as_it_was_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / ".venv" / "bin" / "medvault"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", [str(script), "serve"])
    assert own_command() == ".venv/bin/medvault"


def test_a_command_on_the_path_is_named_plainly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["/usr/local/bin/medvault", "serve"])
    assert own_command() == "/usr/local/bin/medvault"
    monkeypatch.setattr("sys.argv", ["python -m medvault", "serve"])
    assert own_command() == "medvault"
