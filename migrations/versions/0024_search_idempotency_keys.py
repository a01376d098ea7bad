"""Identifications keyed by their submitter's ``Idempotency-Key``: a request resent after a lost
answer or a node's failure answers the search it already made, instead of running a second one
whose candidates the consuls would review twice. Unique per case; searches without a key (NULL)
are not constrained.

Revision ID: 0024
Revises: 0023
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("searches", sa.Column("idempotency_key", sa.String(255), nullable=True))
    op.add_column("searches", sa.Column("request_digest", sa.String(64), nullable=True))
    op.create_index("uq_searches_idempotency_key", "searches", ["case_id", "idempotency_key"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_searches_idempotency_key", table_name="searches")
    with op.batch_alter_table("searches") as table:
        table.drop_column("request_digest")
        table.drop_column("idempotency_key")
