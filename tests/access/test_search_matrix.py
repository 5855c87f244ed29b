"""Search through the authorization matrix: every principal of the generated matrix
(roles and token scope families) searches REST ``q`` and FHIR ``_content`` for words
that the own, the foreign and the deleted document all hold, in their titles and in
their extracted text. It finds exactly the documents in its reach: never a foreign
one, not as an item, not in a total, not in a snippet.

The world (patients, documents, users, tokens) is the matrix's own fixture; the portal
face is covered by tests/web/test_portal_search.py.
"""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from medvault.runtime import Runtime
from tests.access.test_authorization_matrix import (
    PRINCIPALS,
    REACH,
    TOKENS,
    World,
    call,
    world,
)
from tests.search.support import store_text

__all__ = ["world"]  # the matrix's fixture, used here by name

TITLE_WORD = "report"  # every world document is uploaded as report.pdf
CONTENT_WORD = "zqmatrixwordx"
# Principals that may not search at all (no document read): the auditor and its token.
REFUSED = {"auditor", "audit:read"}
# Principals whose searches reach content: they may read it (admins read metadata only).
NO_CONTENT = {"admin"}


def expected_ids(world: World, principal: str, *, content: bool) -> set[str]:
    """The documents (not deleted) that ``principal`` may find."""
    if content and principal in NO_CONTENT:
        return set()
    reach = REACH.get(principal, "all")
    if reach == "none":
        return set()
    if reach == "own":
        return {world.documents["own"]}
    return {world.documents["own"], world.documents["foreign"]}


@pytest.fixture
def texts(world: World, runtime: Runtime) -> dict[str, str]:
    """Each world document's extracted text: the shared word and one of its own."""
    secrets = {}
    for target, document in world.documents.items():
        secrets[target] = f"zqsecret{target}x"
        store_text(runtime, document, f"{CONTENT_WORD} {secrets[target]} finding")
    return secrets


def _rest(world: World, principal: str, word: str) -> tuple[int, set[str], str]:
    request = ("GET", "/api/v1/documents", {"params": {"q": word, "limit": 200}})
    response = call(world.service, request, world.tokens[principal])
    if response.status_code != 200:
        return response.status_code, set(), response.text
    body = response.json()
    return 200, {item["id"] for item in body["items"]}, response.text


def _fhir(world: World, principal: str, word: str, post: bool) -> tuple[int, set[str], str, int]:
    if post:
        request = ("POST", "/fhir/DocumentReference/_search", {"data": {"_content": word}})
    else:
        request = ("GET", "/fhir/DocumentReference", {"params": {"_content": word}})
    response = call(world.service, request, world.tokens[principal])
    if response.status_code != 200:
        return response.status_code, set(), response.text, -1
    bundle = response.json()
    found = {entry["resource"]["id"] for entry in bundle.get("entry", []) if "resource" in entry}
    found = {value.split(".")[0] for value in found}
    return 200, found, json.dumps(bundle.get("entry", [])), bundle.get("total", -1)


@pytest.mark.parametrize("principal", PRINCIPALS)
def test_each_principal_finds_exactly_its_reach(
    app: FastAPI, world: World, texts: dict[str, str], principal: str
) -> None:
    failures = []
    refused = principal in REFUSED or (
        TOKENS.get(principal) is not None and (TOKENS[principal].like == "auditor")
    )
    foreign_doc = world.documents["foreign"]
    foreign_secret = texts["foreign"]
    reaches_foreign = foreign_doc in expected_ids(world, principal, content=False)
    for word, content in ((TITLE_WORD, False), (CONTENT_WORD, True)):
        want = expected_ids(world, principal, content=content)
        faces: list[tuple[str, int, set[str], str, int]] = [
            ("REST q", *_rest(world, principal, word), -1),
            ("FHIR GET", *_fhir(world, principal, word, post=False)),
            ("FHIR POST", *_fhir(world, principal, word, post=True)),
        ]
        for face, status, found, body, total in faces:
            where = f"{principal:16} {face:9} {word}"
            # FHIR lists entered-in-error documents too (no default status filter).
            wanted = want | (
                {world.documents["deleted"]}
                if face.startswith("FHIR") and world.documents["own"] in want
                else set()
            )
            if refused:
                if status != 403:
                    failures.append(f"{where}: {status}, want 403")
                continue
            if status != 200:
                failures.append(f"{where}: {status}: {body[:200]}")
                continue
            if found != wanted:
                failures.append(f"{where}: found {sorted(found)}, want {sorted(wanted)}")
            if total not in (-1, len(wanted)):
                failures.append(f"{where}: total {total}, want {len(wanted)}")
            if not reaches_foreign and (foreign_doc in body or foreign_secret in body):
                failures.append(f"{where}: the foreign document shows in the answer")
            if face == "REST q" and world.documents["deleted"] in found:
                failures.append(f"{where}: a deleted document is listed by default")
    assert not failures, "\n".join(failures)


def test_snippets_quote_only_what_the_caller_reads(
    app: FastAPI, world: World, texts: dict[str, str]
) -> None:
    """A clinician sees its own document's text in the snippet; an admin (metadata
    only) gets no content snippet and no content match at all."""
    clinician = world.tokens["clinician"]
    page = world.service.get(
        "/api/v1/documents",
        params={"q": CONTENT_WORD},
        headers={"Authorization": f"Bearer {clinician}"},
    ).json()
    (hit,) = page["items"]
    assert texts["own"] in "".join(s["text"] for s in hit["snippet"])
    admin = world.tokens["admin"]
    with TestClient(app) as client:
        titled = client.get(
            "/api/v1/documents",
            params={"q": TITLE_WORD},
            headers={"Authorization": f"Bearer {admin}"},
        ).json()
    assert titled["full_text"] is False
    for item in titled["items"]:
        assert not any(secret in json.dumps(item["snippet"]) for secret in texts.values())
