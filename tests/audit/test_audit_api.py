"""The audit API: access, filters, keyset pages, checkpoints and proofs that verify."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from medvault.audit.checkpoints import parse_signed_note, verify_checkpoint
from medvault.audit.merkle_proofs import verify_consistency, verify_inclusion
from medvault.audit.models import AuditEvent, MerkleNode
from medvault.audit.sealer import seal_pending
from medvault.auth.principal import Principal, PrincipalKind, Role
from medvault.deps import get_principal
from medvault.runtime import Runtime
from tests.support.audit_log import ACTORS, GLASS_REASON, PATIENTS, add_events

ROUTES = (
    "/api/v1/audit/events",
    "/api/v1/audit/checkpoint",
    "/api/v1/audit/proof/inclusion?index=0",
    "/api/v1/audit/proof/consistency?first=1",
)
SIZE = 30  # sealed in batches of 8: checkpoints at 8, 16, 24 and 30


@pytest.fixture
def api(audit_app: FastAPI, audit_runtime: Runtime, client: TestClient) -> TestClient:
    """A full-access client, with 30 events sealed."""
    add_events(audit_runtime, SIZE)
    seal_pending(runtime=audit_runtime, batch_size=8)
    return client


@pytest.fixture
def as_role(audit_app: FastAPI) -> Iterator[Callable[[Role], TestClient]]:
    def make(role: Role) -> TestClient:
        who = Principal(PrincipalKind.USER, uuid.uuid4(), f"test-{role.value}", role)
        audit_app.dependency_overrides[get_principal] = lambda: who
        return TestClient(audit_app, raise_server_exceptions=False)

    yield make
    audit_app.dependency_overrides.clear()


def b64(value: str) -> bytes:
    return base64.b64decode(value)


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    return body


def walk(client: TestClient, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/audit/events", params=query).json()
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def test_every_route_needs_audit_read(
    anon_client: TestClient, audit_app: FastAPI, as_role: Callable[[Role], TestClient]
) -> None:
    for route in ROUTES:
        assert problem(anon_client.get(route), 401)["type"].endswith("unauthorized")
    for role in (Role.CLINICIAN, Role.ADMIN, Role.PATIENT):
        denied = as_role(role)
        for route in ROUTES:
            assert problem(denied.get(route), 403)["type"].endswith("forbidden")
    assert as_role(Role.AUDITOR).get("/api/v1/audit/events").status_code == 200


def test_events_newest_first_with_keyset_pages(api: TestClient, audit_runtime: Runtime) -> None:
    before = walk(api, limit=200)
    assert len(before) == SIZE
    # Pages of 7 see those 30 and the first walk's audit.read event; each page's own
    # audit.read event is newer than the cursor, so it never shifts a later page.
    everything = walk(api, limit=7)
    ids = [item["id"] for item in everything]
    assert len(ids) == SIZE + 1 and ids == sorted(set(ids), reverse=True)
    assert [item["id"] for item in before] == ids[1:]
    sealed = [item for item in everything if item["action"] != "audit.read"]
    assert len(sealed) == SIZE
    with audit_runtime.clinical.read_session() as session:
        query = select(MerkleNode.index, MerkleNode.hash).where(MerkleNode.level == 0)
        leaves: dict[int, bytes] = dict(session.execute(query).all())
    for item in sealed:
        assert item["leaf_index"] is not None
        assert b64(item["leaf_hash"]) == leaves[item["leaf_index"]]
        assert item["details"]["note"] == "naïve ü ✓"
    glass = [item for item in sealed if item["break_glass"]]
    assert glass and all(item["break_glass_reason"] == GLASS_REASON for item in glass)
    unsealed = [item for item in everything if item["action"] == "audit.read"]
    assert all(item["leaf_index"] is None and item["leaf_hash"] is None for item in unsealed)


def test_event_filters(api: TestClient) -> None:
    def ids(**params: Any) -> set[int]:
        return {item["id"] for item in walk(api, limit=200, **params)}

    everything = {item["id"]: item for item in walk(api, limit=200)}
    for patient in PATIENTS:
        got = ids(patient_id=str(patient))
        assert got and all(everything[i]["patient_id"] == str(patient) for i in got)
    assert ids(actor=ACTORS[1]) == {i for i, e in everything.items() if e["actor_id"] == ACTORS[1]}
    assert ids(action="patient.read") == {
        i for i, e in everything.items() if e["action"] == "patient.read"
    }
    ordered = sorted(everything.values(), key=lambda e: e["id"])
    middle = ordered[10]["occurred_at"]
    after = ids(occurred_after=middle, action="document.read")
    before = ids(occurred_before=middle, action="document.read")
    reads = {i for i, e in everything.items() if e["action"] == "document.read"}
    assert after and before and after | before == reads and not after & before
    assert ids(actor="user:nobody") == set()


def test_reading_the_audit_log_is_audited(api: TestClient, audit_runtime: Runtime) -> None:
    patient = PATIENTS[0]
    api.get("/api/v1/audit/events", params={"patient_id": str(patient), "action": "x"})
    with audit_runtime.clinical.read_session() as session:
        reads = select(AuditEvent).where(AuditEvent.action == "audit.read")
        event = session.scalars(reads.order_by(AuditEvent.id.desc())).first()
    assert event is not None
    assert event.patient_id == patient and event.resource_type == "audit_log"
    assert event.details == {"view": "events", "returned": 0, "action": "x"}


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"limit": 0}, 422),
        ({"limit": 201}, 422),
        ({"patient_id": "not-a-uuid"}, 422),
        ({"occurred_after": "yesterday"}, 422),
        ({"cursor": "abc"}, 400),
        ({"cursor": "-5"}, 400),
        ({"cursor": "9" * 40}, 422),
    ],
)
def test_bad_event_parameters_are_problems(
    api: TestClient, params: dict[str, Any], status: int
) -> None:
    problem(api.get("/api/v1/audit/events", params=params), status)


def test_checkpoint(api: TestClient, audit_runtime: Runtime) -> None:
    body = api.get("/api/v1/audit/checkpoint").json()
    assert body["tree_size"] == SIZE
    assert b64(body["root_hash"]).hex() == body["root_hash_hex"]
    key = load_pem_public_key(body["public_key_pem"].encode())
    assert isinstance(key, Ed25519PublicKey)
    assert verify_checkpoint(body["note"], b64(body["signature"]), key)
    assert body["key_id"] == audit_runtime.audit_key.key_id
    parsed = parse_signed_note(body["signed_note"])
    assert parsed.note == body["note"] and parsed.verify(key)
    witnessed = (audit_runtime.settings.witness_dir / f"checkpoint-{SIZE}.txt").read_text()
    assert witnessed == body["signed_note"]


def test_no_checkpoint_yet_is_404(
    audit_app: FastAPI, audit_runtime: Runtime, client: TestClient
) -> None:
    problem(client.get("/api/v1/audit/checkpoint"), 404)
    problem(client.get("/api/v1/audit/proof/inclusion", params={"index": 0}), 404)
    problem(client.get("/api/v1/audit/proof/consistency", params={"first": 1}), 404)


def test_inclusion_proofs_verify_against_signed_roots(api: TestClient) -> None:
    events = walk(api, limit=200)
    by_leaf = {e["leaf_index"]: e for e in events if e["leaf_index"] is not None}
    for size in (8, 16, 24, 30):
        for index in sorted({0, 1, size // 2, size - 2, size - 1}):
            response = api.get(
                "/api/v1/audit/proof/inclusion", params={"index": index, "size": size}
            )
            proof = response.json()
            checkpoint = proof["checkpoint"]
            assert checkpoint["tree_size"] == size
            root = b64(checkpoint["root_hash"])
            assert proof["root_hash"] == checkpoint["root_hash"]
            leaf = b64(by_leaf[index]["leaf_hash"])
            assert b64(proof["leaf_hash"]) == leaf
            path = [b64(h) for h in proof["audit_path"]]
            assert verify_inclusion(leaf, index, size, path, root)
            assert not verify_inclusion(leaf, index, size, path, bytes(32))
    default = api.get("/api/v1/audit/proof/inclusion", params={"index": 3}).json()
    assert default["tree_size"] >= SIZE  # the latest checkpoint
    unsigned = api.get("/api/v1/audit/proof/inclusion", params={"index": 3, "size": 11}).json()
    assert unsigned["checkpoint"] is None
    path = [b64(h) for h in unsigned["audit_path"]]
    assert verify_inclusion(b64(unsigned["leaf_hash"]), 3, 11, path, b64(unsigned["root_hash"]))


def test_consistency_proofs_verify_against_signed_roots(api: TestClient) -> None:
    sizes = (8, 16, 24, 30)
    for first in sizes:
        for second in sizes:
            if first > second:
                continue
            response = api.get(
                "/api/v1/audit/proof/consistency", params={"first": first, "second": second}
            )
            body = response.json()
            old = b64(body["first_checkpoint"]["root_hash"])
            new = b64(body["second_checkpoint"]["root_hash"])
            proof = [b64(h) for h in body["proof"]]
            assert verify_consistency(first, second, old, new, proof), (first, second)
    body = api.get("/api/v1/audit/proof/consistency", params={"first": 5}).json()
    latest = body["second"]
    assert latest >= SIZE and body["first_checkpoint"] is None
    proof = [b64(h) for h in body["proof"]]
    assert verify_consistency(5, latest, b64(body["first_root"]), b64(body["second_root"]), proof)


@pytest.mark.parametrize(
    ("route", "params", "status"),
    [
        ("inclusion", {"index": SIZE}, 400),
        ("inclusion", {"index": 8, "size": 8}, 400),
        ("inclusion", {"index": 0, "size": SIZE + 1}, 404),
        ("inclusion", {"index": -1}, 422),
        ("inclusion", {"index": "abc"}, 422),
        ("inclusion", {"index": 0, "size": 0}, 422),
        ("inclusion", {}, 422),
        ("inclusion", {"index": 2**63}, 422),
        ("consistency", {"first": 0}, 422),
        ("consistency", {"first": 9, "second": 8}, 400),
        ("consistency", {"first": 1, "second": SIZE + 1}, 404),
        ("consistency", {"first": "x"}, 422),
    ],
)
def test_bad_proof_parameters_are_problems(
    api: TestClient, route: str, params: dict[str, Any], status: int
) -> None:
    problem(api.get(f"/api/v1/audit/proof/{route}", params=params), status)


def test_an_edited_event_no_longer_matches_its_proof(
    api: TestClient, audit_runtime: Runtime
) -> None:
    with audit_runtime.clinical.session() as session:
        event = session.scalars(select(AuditEvent).where(AuditEvent.leaf_index == 4)).one()
        event.occurred_at += timedelta(seconds=1)
        session.commit()
    (item,) = [e for e in walk(api, limit=200) if e["leaf_index"] == 4]
    proof = api.get("/api/v1/audit/proof/inclusion", params={"index": 4}).json()
    assert item["leaf_hash"] != proof["leaf_hash"]
    path = [b64(h) for h in proof["audit_path"]]
    root = b64(proof["checkpoint"]["root_hash"])
    assert not verify_inclusion(b64(item["leaf_hash"]), 4, SIZE, path, root)
