"""push: config backups, pinned host keys, push results, push locks

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 05:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _device_fk() -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["device_pk"], ["devices.id"], ondelete="CASCADE")


def upgrade() -> None:
    op.create_table(
        "backups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_pk", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        _device_fk(),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("device_pk", "version"),
    )
    op.create_table(
        "host_keys",
        sa.Column("device_pk", sa.Integer(), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("trusted_by", sa.String(length=100), nullable=False),
        _device_fk(),
        sa.PrimaryKeyConstraint("device_pk"),
    )
    op.create_table(
        "push_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("device_pk", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed", sa.Boolean(), nullable=False),
        sa.Column("diff_lines", sa.Integer(), nullable=False),
        sa.Column("result", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("diff", sa.Text(), nullable=False),
        sa.Column("backup_version", sa.Integer(), nullable=True),
        _device_fk(),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_push_results_job", "push_results", ["job_id"])
    op.create_index("ix_push_results_device", "push_results", ["device_pk"])
    op.create_table(
        "push_locks",
        sa.Column("device_pk", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("holder", sa.String(length=100), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        _device_fk(),
        sa.PrimaryKeyConstraint("device_pk"),
    )


def downgrade() -> None:
    op.drop_table("push_locks")
    op.drop_index("ix_push_results_device", table_name="push_results")
    op.drop_index("ix_push_results_job", table_name="push_results")
    op.drop_table("push_results")
    op.drop_table("host_keys")
    op.drop_table("backups")
