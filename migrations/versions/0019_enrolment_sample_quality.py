"""enrolment sample quality: records keep the quality of each template, their versions too, and a
candidate the qualities of the record version it matched

Qualities (0-100, ISO/IEC 29794) are metadata about the samples, not biometric data: kept in
clear as JSON, null where no sample came with one (every record enrolled before this revision).
The columns are added in place, without a copy of the records table.

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("records", sa.Column("qualities", sa.JSON(), nullable=True))
    op.add_column("record_versions", sa.Column("qualities", sa.JSON(), nullable=True))
    op.add_column("candidates", sa.Column("enrolment_qualities", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("candidates") as batch:
        batch.drop_column("enrolment_qualities")
    with op.batch_alter_table("record_versions") as batch:
        batch.drop_column("qualities")
    with op.batch_alter_table("records") as batch:
        batch.drop_column("qualities")
