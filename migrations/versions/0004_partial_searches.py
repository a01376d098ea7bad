"""searches: partial results on request (sharded galleries)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("searches") as batch:
        batch.add_column(sa.Column("allow_partial", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch.add_column(sa.Column("missing_shards", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("searches") as batch:
        batch.drop_column("missing_shards")
        batch.drop_column("allow_partial")
