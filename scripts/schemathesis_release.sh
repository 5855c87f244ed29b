#!/usr/bin/env bash
# Before a release: schemathesis (--checks all, every phase) over the whole OpenAPI
# document on both backends (SQLite+files and PostgreSQL+S3), with many more examples
# per operation than the test suite's quick run. Writes a report and exits non-zero on
# any failure. Usage: scripts/schemathesis_release.sh [examples-per-operation, default 200]
set -euo pipefail
cd "$(dirname "$0")/.."

examples="${1:-200}"
report_dir="artifacts/schemathesis/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$report_dir"

status=0
MEDVAULT_SCHEMATHESIS_EXAMPLES="$examples" .venv/bin/python -m pytest -p no:randomly -q \
    tests/openapi/test_schemathesis.py --timeout 7200 \
    --basetemp "$report_dir/runs" --junitxml "$report_dir/junit.xml" || status=$?

{
    echo "schemathesis release run: $examples examples per operation, both backends"
    echo "pytest exit status: $status"
    backends=(sqlite-fs pg-s3)  # the order the backend fixture runs them in
    index=0
    for run in "$report_dir"/runs/*/schemathesis; do
        # pytest also links the latest run as "…current"; count each run once.
        [ -d "$run" ] && [ ! -L "$(dirname "$run")" ] || continue
        echo
        echo "== ${backends[$index]:-run $index}"
        index=$((index + 1))
        grep -E "^(  Selected|  [0-9]+ generated|=+ .* in [0-9.]+s)" "$run/output.txt" || true
        sed -n '/^Failures:/,/^$/p' "$run/output.txt"
    done
} > "$report_dir/report.txt"
cat "$report_dir/report.txt"
echo "Full output, NDJSON events and JUnit XML: $report_dir"
exit "$status"
