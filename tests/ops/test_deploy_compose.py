"""deploy/compose.yml holds together, checked without a Docker engine.

There is no Docker engine on the test machines, so the file is read as YAML and its
cross-references are checked: every service, config and volume it names exists, every
variable it interpolates is documented in deploy/.env.example, and the settings that
must agree across services (the worker split, clamd's stream limit against the upload
limit, nginx's body limit) do.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from medvault.config import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
# ${NAME}, ${NAME:-default}, ${NAME:?message}; `$$` is a literal dollar sign.
_VARIABLE = re.compile(r"(?<!\$)\$\{([A-Z0-9_]+)(?::?[-?][^}]*)?\}")
_SIZE = re.compile(r"^(\d+)([KkMm]?)$")


def _compose() -> dict[str, Any]:
    loaded = yaml.safe_load((DEPLOY / "compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _medvault_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("image") == "medvault:local"
    }


def _clamd_option(compose: dict[str, Any], option: str) -> str:
    for line in compose["configs"]["clamd-conf"]["content"].splitlines():
        words = line.split()
        if words and words[0] == option:
            return str(words[1])
    raise AssertionError(f"clamd.conf in compose.yml does not set {option}")


def _bytes(size: str) -> int:
    match = _SIZE.match(size)
    assert match is not None, size
    return int(match[1]) * {"": 1, "k": 1024, "m": 1024 * 1024}[match[2].lower()]


def _default(value: str) -> str:
    """The value compose would use with an empty .env: the ``:-`` default."""
    match = re.fullmatch(r"\$\{[A-Z0-9_]+:-([^}]*)\}", value)
    return match[1] if match else value


def test_every_reference_resolves() -> None:
    compose = _compose()
    services = compose["services"]
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for config in service.get("configs", []):
            assert config["source"] in compose["configs"], f"{name}: {config['source']}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in compose["volumes"], f"{name} mounts unknown volume {source}"


def test_every_interpolated_variable_is_documented_in_the_env_example() -> None:
    text = (DEPLOY / "compose.yml").read_text()
    used = set(_VARIABLE.findall(text))
    documented = set(
        re.findall(r"^([A-Z0-9_]+)=", (DEPLOY / ".env.example").read_text(), re.MULTILINE)
    )
    assert used, "no ${...} found: the pattern no longer matches the file"
    assert used - documented == set()


def test_instances_leave_background_work_to_the_worker_service() -> None:
    compose = _compose()
    medvault = _medvault_services(compose)
    workers = [name for name, s in medvault.items() if s.get("command") == ["medvault", "worker"]]
    assert workers == ["worker"]
    for name, service in medvault.items():
        environment = service["environment"]
        assert environment["MEDVAULT_EMBEDDED_WORKER"] == "false", name
        assert environment["MEDVAULT_CLAMD_URL"] == "tcp://clamav:3310", name
        # Each setting the file gives must be one medvault accepts.
        fields = {f"MEDVAULT_{field.upper()}" for field in Settings.model_fields}
        unknown = {key for key in environment if key.startswith("MEDVAULT_")} - fields
        assert unknown == set(), unknown
    # The worker stops gracefully: compose waits longer than the worker lets a job run.
    assert compose["services"]["worker"]["stop_grace_period"] == "40s"


def test_clamd_accepts_every_document_the_vault_and_proxy_accept() -> None:
    compose = _compose()
    environment = compose["x-medvault"]["environment"]
    max_upload = int(_default(environment["MEDVAULT_MAX_UPLOAD_BYTES"]))
    assert max_upload == Settings.model_fields["max_upload_bytes"].default
    stream_limit = _bytes(_clamd_option(compose, "StreamMaxLength"))
    assert stream_limit >= max_upload
    assert _bytes(_clamd_option(compose, "MaxFileSize")) >= max_upload
    assert _clamd_option(compose, "TCPSocket") == "3310"
    nginx = compose["configs"]["nginx-medvault"]["content"]
    body_limit = re.search(r"client_max_body_size (\d+[km]?);", nginx)
    assert body_limit is not None
    assert _bytes(body_limit[1].upper()) >= max_upload
