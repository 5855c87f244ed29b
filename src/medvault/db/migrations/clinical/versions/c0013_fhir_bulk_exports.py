"""FHIR Bulk Data exports: the export requests and their encrypted NDJSON files

Revision ID: c0013
Revises: c0012
Create Date: 2026-12-08 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c0013"
down_revision: str | None = "c0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "fhir_bulk_exports",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("level", sa.String(length=16), nullable=False),
        sa.Column("principal_kind", sa.String(length=16), nullable=False),
        sa.Column("principal_id", sa.Uuid(), nullable=False),
        sa.Column("session_id", sa.Uuid(), nullable=True),
        sa.Column("actor_id", sa.String(length=200), nullable=False),
        sa.Column("actor_role", sa.String(length=16), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("request_url", sa.Text(), nullable=False),
        sa.Column("base_url", sa.String(length=500), nullable=False),
        sa.Column("types", sa.String(length=200), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column("progress", sa.String(length=100), nullable=True),
        sa.Column("transaction_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fhir_bulk_exports")),
    )
    op.create_index("ix_fhir_bulk_exports_expires", "fhir_bulk_exports", ["state", "expires_at"])
    op.create_index(
        "ix_fhir_bulk_exports_owner", "fhir_bulk_exports", ["principal_kind", "principal_id"]
    )
    op.create_table(
        "fhir_bulk_export_files",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("export_id", sa.Uuid(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("storage_key", sa.String(length=255), nullable=False),
        sa.Column("kek_id", sa.String(length=64), nullable=False),
        sa.Column("wrapped_dek", sa.LargeBinary(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["export_id"],
            ["fhir_bulk_exports.id"],
            name=op.f("fk_fhir_bulk_export_files_export_id_fhir_bulk_exports"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fhir_bulk_export_files")),
        sa.UniqueConstraint("storage_key", name=op.f("uq_fhir_bulk_export_files_storage_key")),
    )
    op.create_index(
        "ix_fhir_bulk_export_files_export",
        "fhir_bulk_export_files",
        ["export_id", "name"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("ix_fhir_bulk_export_files_export", table_name="fhir_bulk_export_files")
    op.drop_table("fhir_bulk_export_files")
    op.drop_index("ix_fhir_bulk_exports_owner", table_name="fhir_bulk_exports")
    op.drop_index("ix_fhir_bulk_exports_expires", table_name="fhir_bulk_exports")
    op.drop_table("fhir_bulk_exports")
