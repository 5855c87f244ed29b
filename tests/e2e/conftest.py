"""End-to-end reporting: crash-safety results appear in the summary even without ``-s``.

Orphan blobs are allowed after a crash, but they must never be silent.
"""

from __future__ import annotations

import json

import pytest


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = []
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) != "call":
                continue
            for name, value in getattr(report, "user_properties", []):
                if name != "crash_safety_summary":
                    continue
                summary = json.loads(value)
                lines.append(
                    f"{summary['backend']}: acknowledged {summary['acknowledged']}/"
                    f"{summary['uploads_planned']}, kills {len(summary['kills'])} "
                    f"({summary['kills_with_uploads_in_flight']} with uploads in flight), "
                    f"rows without blob {len(summary['rows_without_blob'])}, "
                    f"orphan blobs {summary['orphan_blobs']}, "
                    f"temp files/partial uploads {summary['temp_files']}, "
                    f"storm {summary['storm_seconds']}s (seed {summary['seed']})"
                )
    if lines:
        terminalreporter.section("crash safety")
        for line in sorted(lines):
            terminalreporter.write_line(line)
