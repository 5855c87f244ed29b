"""Small-file uploads with authorisation, auditing and sealing on, against the core vault.

Issue 3's target: upload requests/s with access control and the tamper-evident audit
log on must stay >= 0.9x the core issue's figure. Single runs on this 2-core machine
swing by 10%, so both versions are measured here in one run, alternating, and the
ratio of medians is reported:

* ``core``: the vault as it was when the core issue was finished (``--core-rev``),
  checked out into a temporary git worktree and run from the same virtualenv;
* ``current``: this checkout, with the audit sealer running in ``medvault serve``.

Each round runs ``small_files.py`` (16 clients, 10 KiB raw uploads) for both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common import BENCH_DIR, RESULTS_DIR, machine_info, new_figure, save_figure, write_json

REPO = BENCH_DIR.parent
# The last commit of the core issue (before identity and the audit log landed).
DEFAULT_CORE_REV = "a975a3a"


def run_small_files(duration: float, server_env: str) -> dict[str, Any]:
    subprocess.run(
        [sys.executable, str(BENCH_DIR / "small_files.py"), "--duration", str(duration)],
        env={**os.environ, "BENCH_SERVER_ENV": server_env},
        check=True,
        capture_output=True,
        timeout=duration * 4 + 120,
    )
    result: dict[str, Any] = json.loads((RESULTS_DIR / "small_files.json").read_text())
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=20.0, help="Seconds per phase")
    parser.add_argument("--core-rev", default=DEFAULT_CORE_REV)
    args = parser.parse_args()

    worktree = Path(tempfile.mkdtemp(prefix="medvault-core-")) / "core"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(worktree), args.core_rev],
        check=True,
    )
    # small_files.py overwrites its own result file; keep the standalone one intact.
    own = RESULTS_DIR / "small_files.json"
    saved = own.read_bytes() if own.exists() else None
    rounds: list[dict[str, Any]] = []
    try:
        for number in range(1, args.rounds + 1):
            for version, env in (("core", f"PYTHONPATH={worktree / 'src'}"), ("current", "")):
                result = run_small_files(args.duration, env)
                upload = result["upload"]
                rounds.append(
                    {
                        "round": number,
                        "version": version,
                        "upload_rps": upload["requests_per_s"],
                        "upload_p99_ms": upload["latency"]["p99_ms"],
                        "download_rps": result["download"]["requests_per_s"],
                    }
                )
                print(
                    f"round {number} {version:8} upload {upload['requests_per_s']:.1f} req/s",
                    flush=True,
                )
    finally:
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)], check=False
        )
        if saved is not None:
            own.write_bytes(saved)

    def median(version: str, key: str) -> float:
        values: list[float] = [r[key] for r in rounds if r["version"] == version]
        return statistics.median(values)

    medians = {
        version: {
            key: median(version, key) for key in ("upload_rps", "upload_p99_ms", "download_rps")
        }
        for version in ("core", "current")
    }
    ratio = medians["current"]["upload_rps"] / medians["core"]["upload_rps"]
    summary: dict[str, Mapping[str, object]] = {
        **medians,
        "upload_ratio": {"value": round(ratio, 3), "target": ">= 0.9", "met": ratio >= 0.9},
    }
    write_json(
        "auth_overhead",
        {
            "benchmark": "auth_overhead",
            "machine": machine_info(),
            "config": vars(args),
            "rounds": rounds,
            "summary": summary,
        },
    )

    fig, ax = new_figure(1)
    for offset, version in ((-0.15, "core"), (0.15, "current")):
        values = [r["upload_rps"] for r in rounds if r["version"] == version]
        ax.bar([r + offset for r in range(1, len(values) + 1)], values, width=0.3, label=version)
    ax.set_xlabel("round (alternating)")
    ax.set_ylabel("uploads/s (16 clients, 10 KiB)")
    ax.set_title(f"Auth + audit + sealer vs core: {ratio:.2f}x (median)")
    ax.legend()
    save_figure(fig, "auth_overhead")
    print(f"upload ratio current/core = {ratio:.3f} (target >= 0.9)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
