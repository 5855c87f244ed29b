"""The deployment files against their specifications, without a Docker engine.

``deploy/compose.yml`` is validated against the Compose Specification's JSON schema (the
copy check-jsonschema vendors from compose-spec/compose-spec), and the Dockerfile must
build the same install as ``scripts/serve.sh``: the same package, the same extras, the
same entry point.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_compose_file_conforms_to_the_compose_specification() -> None:
    result = _check_compose(DEPLOY / "compose.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_a_file_that_breaks_the_specification(tmp_path: Path) -> None:
    """Not vacuous: the same check on a copy with one misspelt service key fails."""
    compose = yaml.safe_load((DEPLOY / "compose.yml").read_text())
    compose["services"]["nginx"]["restrat"] = "always"
    broken = tmp_path / "compose.yml"
    broken.write_text(yaml.safe_dump(compose))
    result = _check_compose(broken)
    assert result.returncode != 0
    assert "restrat" in result.stdout + result.stderr


def _pip_targets(script: str) -> list[str]:
    """What each ``pip install`` line installs, editable or not ('.' or '.[extra]')."""
    targets = []
    for match in re.finditer(r"pip install\s+(?:-\S+\s+)*(\.(?:\[[^\]]*\])?)", script):
        targets.append(match[1])
    return targets


def test_dockerfile_installs_what_serve_sh_installs() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    serve = (ROOT / "scripts" / "serve.sh").read_text()
    assert _pip_targets(dockerfile) == _pip_targets(serve) == ["."]
    # Both start the same command: serve.sh execs it, the image runs it as CMD.
    assert 'exec .venv/bin/medvault serve "$@"' in serve
    assert 'CMD ["medvault", "serve"]' in dockerfile


def test_dockerfile_python_satisfies_the_package() -> None:
    image = re.search(r"^FROM python:(\d+)\.(\d+)", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert image is not None
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    floor = re.fullmatch(r">=\s*(\d+)\.(\d+)", requires)
    assert floor is not None, requires
    assert (int(image[1]), int(image[2])) >= (int(floor[1]), int(floor[2]))
