"""Run the schemathesis CLI (``--checks all``) against a live vault; shared by the test
suite (few examples per operation) and ``scripts/schemathesis_release.sh`` (many)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
CONFIG = Path(__file__).with_name("schemathesis.toml")


@dataclass
class RunResult:
    returncode: int
    output: str
    report: Path


def run_schemathesis(
    *, base_url: str, token: str, max_examples: int, report_dir: Path
) -> RunResult:
    """Every phase, every check, deterministic generation, one worker (no ordering races).

    ``positive_data_acceptance`` is replaced by the variant in ``st_hooks`` that
    tolerates only refusals no schema can rule out (see ``STATE_DEPENDENT_REFUSALS``).
    """
    report_dir.mkdir(parents=True, exist_ok=True)
    ndjson = report_dir / "events.ndjson"
    command = [
        str(SCHEMATHESIS),
        "--config-file",
        str(CONFIG),
        "run",
        f"{base_url}/openapi.json",
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance",
        "--max-examples",
        str(max_examples),
        "--generation-deterministic",
        "--workers",
        "1",
        "--continue-on-failure",
        "--no-color",
        "--header",
        f"Authorization: Bearer {token}",
        "--request-timeout",
        "30",
        "--report",
        "ndjson,junit",
        "--report-ndjson-path",
        str(ndjson),
        "--report-junit-path",
        str(report_dir / "junit.xml"),
    ]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": "tests.openapi.st_hooks",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    # cwd: the CLI keeps a cache folder (.schemathesis/) where it runs; not in the repo.
    done = subprocess.run(  # our own venv's schemathesis, fixed arguments
        command, cwd=report_dir, env=env, capture_output=True, text=True, timeout=1800, check=False
    )
    output = done.stdout + done.stderr
    (report_dir / "output.txt").write_text(output)
    return RunResult(done.returncode, output, ndjson)


def failure_summary(ndjson: Path) -> list[str]:
    """One line per failing (operation, check, status): what the release report lists."""
    lines: set[str] = set()
    if not ndjson.exists():
        return []
    for raw in ndjson.read_text().splitlines():
        event = json.loads(raw).get("ScenarioFinished")
        if not event:
            continue
        recorder = event["recorder"]
        for case_id, checks in recorder.get("checks", {}).items():
            for check in checks:
                if check["status"] != "failure":
                    continue
                interaction = recorder.get("interactions", {}).get(case_id) or {}
                status = (interaction.get("response") or {}).get("status_code")
                lines.add(f"{recorder['label']} :: {check['name']} -> {status}")
    return sorted(lines)
