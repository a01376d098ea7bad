"""review outcomes: inconclusive decisions and four-eyes confirmation

Candidates get the consul who confirmed first under four-eyes (who, when, note), kept beside the
consul who settled them (reviewed_by, reviewed_at, note); review_state widens for
``pending_second_review``. review_policies holds, per country of origin, whether a confirmation
needs a second consul; a country without a row needs one, as before.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

import app.db.base

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "review_policies",
        sa.Column("country", sa.String(length=3), nullable=False),
        sa.Column("second_reviewer_required", sa.Boolean(), nullable=False),
        sa.Column("updated_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["updated_by"], ["principals.id"], name=op.f("fk_review_policies_updated_by_principals")
        ),
        sa.PrimaryKeyConstraint("country", name=op.f("pk_review_policies")),
    )
    with op.batch_alter_table("candidates") as batch:
        batch.alter_column("review_state", existing_type=sa.String(length=16), type_=sa.String(length=32))
        batch.add_column(sa.Column("first_reviewed_by", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("first_reviewed_at", app.db.base.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("first_note", sa.String(length=2000), nullable=True))
        batch.create_foreign_key(
            batch.f("fk_candidates_first_reviewed_by_principals"), "principals", ["first_reviewed_by"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("candidates") as batch:
        batch.drop_constraint(batch.f("fk_candidates_first_reviewed_by_principals"), type_="foreignkey")
        batch.drop_column("first_note")
        batch.drop_column("first_reviewed_at")
        batch.drop_column("first_reviewed_by")
        batch.alter_column("review_state", existing_type=sa.String(length=32), type_=sa.String(length=16))
    op.drop_table("review_policies")
