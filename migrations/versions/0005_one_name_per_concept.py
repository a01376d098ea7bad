"""one name per concept: searches.searched_galleries, candidates.match_threshold and
possible_threshold (the words of the API and the code)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("searches") as batch:
        batch.alter_column("targets", new_column_name="searched_galleries")
    with op.batch_alter_table("candidates") as batch:
        batch.alter_column("threshold_match", new_column_name="match_threshold")
        batch.alter_column("threshold_possible", new_column_name="possible_threshold")


def downgrade() -> None:
    with op.batch_alter_table("candidates") as batch:
        batch.alter_column("possible_threshold", new_column_name="threshold_possible")
        batch.alter_column("match_threshold", new_column_name="threshold_match")
    with op.batch_alter_table("searches") as batch:
        batch.alter_column("searched_galleries", new_column_name="targets")
