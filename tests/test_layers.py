"""The layers of ARCHITECTURE.md hold, so the suite fails the day one breaks.

A service that loads FastAPI cannot be used by the CLI or a worker without dragging
the web framework along, and a router that imports another router hides a use case in
the HTTP layer. import-linter checks the whole graph; the first test below checks the
outcome that matters most in a fresh interpreter, where nothing else was imported first.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WEB_FRAMEWORKS = ("fastapi", "starlette")
# The contracts in pyproject's [tool.importlinter]. A contract removed there must be
# removed here too, on purpose.
CONTRACT_COUNT = 6


@pytest.mark.parametrize(
    "module",
    ["medvault.documents.service", "medvault.documents.reading", "medvault.patients.service"],
)
def test_importing_a_service_loads_no_web_framework(module: str) -> None:
    probe = (
        f"import sys, {module}\n"
        f"print(' '.join(sorted(name for name in sys.modules"
        f" if name.partition('.')[0] in {WEB_FRAMEWORKS!r})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.split() == [], f"{module} loads {result.stdout.strip()}"


def test_every_import_contract_is_kept() -> None:
    configured = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    assert len(configured["contracts"]) == CONTRACT_COUNT

    # --no-cache: parallel test workers must not share a cache directory.
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache", "--no-logo"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = re.search(r"Contracts: (\d+) kept, (\d+) broken\.", result.stdout)
    assert summary is not None, result.stdout
    assert (int(summary[1]), int(summary[2])) == (CONTRACT_COUNT, 0)
