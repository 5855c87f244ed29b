"""Audit API shapes. Hashes and signatures are standard base64, as in the signed note."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


class AuditEventOut(BaseModel):
    id: int
    leaf_index: int | None = Field(description="Position in the Merkle tree; null until sealed")
    leaf_hash: str | None = Field(
        description="RFC 6962 leaf hash of this event's canonical encoding (see audit/leaf.py), "
        "recomputed from the row as served: compare it with an inclusion proof's leaf_hash"
    )
    occurred_at: datetime
    actor_id: str
    actor_role: str
    action: str
    resource_type: str | None
    resource_id: str | None
    patient_id: uuid.UUID | None
    outcome: str
    client_ip: str | None
    user_agent: str | None
    request_id: str | None
    details: dict[str, Any]
    break_glass: bool
    break_glass_reason: str | None


class AuditEventPage(BaseModel):
    items: list[AuditEventOut]
    next_cursor: str | None = Field(description="Pass back as `cursor` for older events")


class CheckpointOut(BaseModel):
    tree_size: int
    root_hash: str = Field(description="base64")
    root_hash_hex: str
    created_at: datetime
    key_id: str
    signature: str = Field(description="base64 Ed25519 signature of `note`")
    note: str = Field(description="The exact signed text")
    signed_note: str = Field(description="note + signature line: a witness file's content")


class SignedCheckpointOut(CheckpointOut):
    public_key_pem: str = Field(description="The audit key that signs checkpoints")


class InclusionProofOut(BaseModel):
    leaf_index: int
    tree_size: int
    leaf_hash: str = Field(description="The sealed leaf hash (base64)")
    audit_path: list[str] = Field(description="RFC 6962 PATH, leaf upwards (base64)")
    root_hash: str = Field(description="Root of the tree of this size, from stored nodes")
    checkpoint: CheckpointOut | None = Field(
        description="The signed checkpoint of exactly this size, if there is one. Verify "
        "against a signed root: the proof alone does not pin the tree size."
    )


class ConsistencyProofOut(BaseModel):
    first: int
    second: int
    proof: list[str] = Field(description="RFC 6962 PROOF(first, D[second]) (base64)")
    first_root: str
    second_root: str
    first_checkpoint: CheckpointOut | None
    second_checkpoint: CheckpointOut | None
