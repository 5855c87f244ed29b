"""Governance tests upload many records; previews and text extraction would parse every
upload in a child process. Only the tests marked ``derivation`` (what destruction must
remove, what every blob's header holds) pay for them."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_derivation_unless_marked(request: pytest.FixtureRequest) -> None:
    if "runtime" not in request.fixturenames or request.node.get_closest_marker("derivation"):
        return
    runtime = request.getfixturevalue("runtime")
    # The app built on this runtime reads the same settings object at each upload.
    runtime.settings = runtime.settings.model_copy(update={"previews": False, "fulltext": False})
