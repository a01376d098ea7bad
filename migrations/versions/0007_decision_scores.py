"""candidates: the decision score their band was read from

A candidate's band is now read from its score against the probe's cohort (matcher.CohortMargin),
not from the raw score; both are kept, so that a reviewer sees the comparison score and what the
decision rested on. Candidates found before have none (null).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("candidates") as batch:
        batch.add_column(sa.Column("decision_score", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("candidates") as batch:
        batch.drop_column("decision_score")
