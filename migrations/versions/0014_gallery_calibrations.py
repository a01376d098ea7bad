"""gallery calibrations: each gallery's non-mated calibration sample, drawn once and read by
every process and node, so that all answer with the same thresholds and a start draws none

Galleries get their row at their first identification or verification after this revision.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

import app.db.base

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gallery_calibrations",
        sa.Column("gallery_id", sa.Integer(), nullable=False),
        sa.Column("statistic", sa.String(length=128), nullable=False),
        sa.Column("template_count", sa.Integer(), nullable=False),
        sa.Column("nonmated_decisions", sa.LargeBinary(), nullable=False),
        sa.Column("nonmated_pairs", sa.LargeBinary(), nullable=False),
        sa.Column("drawn_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["gallery_id"],
            ["galleries.id"],
            name=op.f("fk_gallery_calibrations_gallery_id_galleries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("gallery_id", name=op.f("pk_gallery_calibrations")),
    )


def downgrade() -> None:
    op.drop_table("gallery_calibrations")
