"""schemathesis over the whole OpenAPI document, against the real app on each backend.

The document must tell the truth: every status and media type an operation answers
is declared, schema-valid requests are accepted, schema-violating ones refused, and
no input is a server error. A failure here names the operation and the check.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI

from tests.openapi.schemathesis_run import failure_summary, run_schemathesis
from tests.support.live_server import LiveServer

# Enough for every phase to reach every operation in about a minute per backend;
# scripts/schemathesis_release.sh runs many more.
MAX_EXAMPLES = int(os.environ.get("MEDVAULT_SCHEMATHESIS_EXAMPLES", "10"))


def test_openapi_document_holds_under_schemathesis(
    app: FastAPI, api_token: str, tmp_path: Path
) -> None:
    with LiveServer(app) as server:
        result = run_schemathesis(
            base_url=server.url,
            token=api_token,
            max_examples=MAX_EXAMPLES,
            report_dir=tmp_path / "schemathesis",
        )
    failures = failure_summary(result.report)
    assert result.returncode == 0 and not failures, (
        "schemathesis found failures:\n" + "\n".join(failures) + "\n\n" + result.output[-20000:]
    )
