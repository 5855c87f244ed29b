"""documents.origin: whether the patient or staff authored a document

Revision ID: c0004
Revises: c0003
Create Date: 2026-12-04 19:00:00.000000

Existing documents are marked ``patient`` when their creator is an actor the audit
log has seen acting as a patient (a portal patient user); everything else, including
uploads by patient-bound API tokens whose role the clinical database cannot tell, stays
``staff``. Erring that way only ever takes a right away from a patient, never gives a
patient power over a clinician's record.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c0004"
down_revision: str | None = "c0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("origin", sa.String(length=16), server_default="staff", nullable=False)
        )
    op.execute(
        "UPDATE documents SET origin = 'patient' WHERE created_by IN "
        "(SELECT actor_id FROM audit_events WHERE actor_role = 'patient')"
    )


def downgrade() -> None:
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_column("origin")
