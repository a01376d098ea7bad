"""audit events sequenced after commit: writers insert into audit_pending, the sequencer chains

Appending an audit event no longer reads and locks the chain's head in the writer's transaction:
the event goes into audit_pending, and the sequencer gives it its seq and hash after commit.
Events already chained stay as they are; nothing is moved.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

import app.db.base

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_pending",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("principal_id", sa.Integer(), nullable=True),
        sa.Column("role", sa.String(length=20), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("resource", sa.String(length=200), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_pending")),
    )


def downgrade() -> None:
    """Refused while events are pending: dropping the table would lose acknowledged events."""
    pending = op.get_bind().execute(sa.text("SELECT count(*) FROM audit_pending")).scalar()
    if pending:
        raise RuntimeError(
            f"{pending} audit events are not sequenced yet: run `readmit audit verify` (it sequences them) first"
        )
    op.drop_table("audit_pending")
