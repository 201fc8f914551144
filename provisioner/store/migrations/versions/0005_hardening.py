"""hardening: order generations, source blocks, refused fetches, token expiry

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 15:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "counters",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.execute("INSERT INTO counters (name, value) VALUES ('generation', 0)")
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("generation", sa.Integer(), nullable=False, server_default="0"))
        batch.create_index("ix_orders_generation", ["generation"])
    with op.batch_alter_table("device_state") as batch:
        batch.add_column(sa.Column("refusals", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("last_refused_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_refused_source", sa.String(length=45), nullable=True))
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "source_blocks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=45), nullable=False),
        sa.Column("blocked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("protocol", sa.String(length=8), nullable=False),
        sa.Column("names", sa.Integer(), nullable=False),
        sa.Column("lifted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lifted_by", sa.String(length=100), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_source_blocks_source", "source_blocks", ["source"])


def downgrade() -> None:
    op.drop_index("ix_source_blocks_source", table_name="source_blocks")
    op.drop_table("source_blocks")
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("expires_at")
    with op.batch_alter_table("device_state") as batch:
        batch.drop_column("last_refused_source")
        batch.drop_column("last_refused_at")
        batch.drop_column("refusals")
    with op.batch_alter_table("orders") as batch:
        batch.drop_index("ix_orders_generation")
        batch.drop_column("generation")
    op.drop_table("counters")
