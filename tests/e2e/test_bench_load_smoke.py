"""bench/load.py runs end to end: a few seconds against one instance (issue 17).

A smoke test only: no timing is asserted. It proves the benchmark still starts its
cluster (nginx, a worker, its own PostgreSQL server, S3, Redis), runs the whole mix without a single
error, and writes its JSON and PNG. One instance keeps it cheap; several instances are
tests/e2e/test_scale_out.py's subject.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.cluster import RedisServer
from tests.support.nginx import nginx_binary
from tests.support.pg_cluster import tools_missing
from tests.support.services import unavailable

BENCH = Path(__file__).resolve().parents[2] / "bench" / "load.py"


def test_the_load_benchmark_runs_without_errors(tmp_path: Path) -> None:
    nginx_binary()
    RedisServer(tmp_path / "probe")  # skip locally / fail in CI without redis-server
    missing = tools_missing()
    if missing:
        unavailable(f"the load benchmark starts its own PostgreSQL: {missing}")
    done = subprocess.run(
        [
            *(sys.executable, str(BENCH), "--duration", "4", "--instances", "1"),
            *("--clients", "8", "--workers", "1", "--name", "load_smoke"),
            *("--patients", "2", "--accounts", "2", "--seed-documents", "4"),
            *("--results-dir", str(tmp_path)),
        ],
        capture_output=True,
        timeout=240,
        check=False,
    )
    output = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    assert done.returncode == 0, output[-6000:]
    report = json.loads((tmp_path / "load_smoke.json").read_text())
    assert [run["instances"] for run in report["runs"]] == [1]
    for run in report["runs"]:
        assert run["requests"] > 0, run
        assert run["errors"] == 0, (run["errors_by_op_status"], output[-6000:])
        assert run["rss_samples"], run
    assert (tmp_path / "load_smoke.png").stat().st_size > 0
