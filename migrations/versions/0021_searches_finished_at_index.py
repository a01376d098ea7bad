"""an index on searches' end time: the case linker reads the searches finished lately at every
pass, which without it scanned every search ever run

Revision ID: 0021
Revises: 0020
Create Date: 2026-11-26
"""

from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("searches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_searches_finished_at"), ["finished_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("searches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_searches_finished_at"))
