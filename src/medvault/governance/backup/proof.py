"""The audit checkpoint a backup records, and the proof that a restored vault matches it.

The checkpoint is read *before* the databases are dumped: checkpoints are append-only
rows, so one committed before the dump began is in the dump, and the restored log
must reach its size with its root. (Read after the dump, a newer checkpoint could be
missing from the dump and every restore would look truncated.)

The proof reuses the audit package's own verifier: the manifest's checkpoint is
written into a scratch witness directory and ``verify_log`` runs against it. So the
restored log is recomputed leaf by leaf, node by node and signature by signature as
``medvault audit verify`` does, and in addition its tree at the manifest's size must
have the manifest's root (else *rewritten*), it must reach that size (else
*truncated*), and the checkpoint's signature must verify with the restoring
configuration's audit key (else *witness*: wrong key, or a forged manifest).
"""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from medvault.audit import repository as audit_repository
from medvault.audit.checkpoints import (
    MalformedCheckpoint,
    SignedCheckpoint,
    WitnessDirectory,
    parse_signed_note,
)
from medvault.audit.verify import AuditReport, Kind, verify_log
from medvault.db.engine import Database
from medvault.documents.integrity import Finding, IntegrityReport, verify_all
from medvault.governance.backup.manifest import CheckpointEntry
from medvault.runtime import Runtime

# Findings that come from comparing the log with the manifest's checkpoint.
WITNESS_KINDS = frozenset({Kind.REWRITTEN, Kind.TRUNCATED, Kind.WITNESS})


def latest_checkpoint(clinical: Database) -> CheckpointEntry | None:
    """The newest signed checkpoint now; call it before dumping (see the module docstring)."""
    with clinical.read_session() as session:
        row = audit_repository.latest_checkpoint(session)
        if row is None:
            return None
        checkpoint = SignedCheckpoint.from_row(row)
    return CheckpointEntry(
        tree_size=checkpoint.tree_size,
        root_hash=base64.b64encode(checkpoint.root_hash).decode(),
        key_id=checkpoint.key_id,
        signed_note=checkpoint.signed_note(),
    )


@dataclass
class RestoreProof:
    integrity: IntegrityReport
    audit: AuditReport
    checkpoint: CheckpointEntry | None
    checkpoint_problem: str | None = None
    """Set when the manifest's checkpoint itself could not be read."""

    @property
    def checkpoint_matches(self) -> bool:
        if self.checkpoint_problem is not None:
            return False
        return not any(self.audit.counts[kind.value] for kind in WITNESS_KINDS)

    @property
    def healthy(self) -> bool:
        return (
            self.integrity.healthy
            and self.audit.healthy
            and self.checkpoint_problem is None
            and self.checkpoint_matches
        )


def prove_restore(
    *,
    runtime: Runtime,
    checkpoint: CheckpointEntry | None,
    on_finding: Callable[[Finding], None] | None = None,
    on_progress: Callable[[str, int], None] | None = None,
) -> RestoreProof:
    """Decrypt every version (``verify --all``) and verify the audit log against ``checkpoint``."""
    integrity = verify_all(
        runtime=runtime,
        on_finding=on_finding,
        on_progress=None if on_progress is None else lambda n: on_progress("versions", n),
    )
    problem = None
    with tempfile.TemporaryDirectory(prefix="medvault-proof-") as scratch:
        witness = Path(scratch)
        if checkpoint is not None:
            try:
                signed = parse_signed_note(checkpoint.signed_note)
            except MalformedCheckpoint as exc:
                problem = f"the manifest's audit checkpoint is unreadable: {exc}"
            else:
                if (signed.tree_size, base64.b64encode(signed.root_hash).decode()) != (
                    checkpoint.tree_size,
                    checkpoint.root_hash,
                ):
                    problem = "the manifest's checkpoint fields disagree with its signed note"
                WitnessDirectory(witness).record(signed)
        audit = verify_log(
            runtime=runtime,
            witness_dir=witness,
            on_progress=None
            if on_progress is None
            else lambda done, _total: on_progress("audit events", done),
        )
    return RestoreProof(integrity, audit, checkpoint, problem)
