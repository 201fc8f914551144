"""serving: enrollment windows and device state

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 04:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "enrollments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("order_pk", sa.Integer(), nullable=False),
        sa.Column("device_pk", sa.Integer(), nullable=True),
        sa.Column("armed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("armed_by", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(["order_pk"], ["orders.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["device_pk"], ["devices.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("device_pk"),
    )
    op.create_index("ix_enrollment_order", "enrollments", ["order_pk"])
    op.create_table(
        "device_state",
        sa.Column("device_pk", sa.Integer(), nullable=False),
        sa.Column("bound_source", sa.String(length=45), nullable=True),
        sa.Column("bound_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_file", sa.String(length=255), nullable=True),
        sa.Column("last_hash", sa.String(length=64), nullable=True),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_source", sa.String(length=45), nullable=True),
        sa.Column("last_protocol", sa.String(length=8), nullable=True),
        sa.Column("last_user_agent", sa.String(length=200), nullable=True),
        sa.Column("fetches", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["device_pk"], ["devices.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("device_pk"),
    )


def downgrade() -> None:
    op.drop_table("device_state")
    op.drop_index("ix_enrollment_order", table_name="enrollments")
    op.drop_table("enrollments")
