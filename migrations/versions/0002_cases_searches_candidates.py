"""cases searches candidates

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

import app.db.base

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("agency", sa.String(length=64), nullable=False),
        sa.Column("agency_country", sa.String(length=3), nullable=False),
        sa.Column("external_ref", sa.String(length=128), nullable=False),
        sa.Column("detained_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("detention_limit_days", sa.Integer(), nullable=False),
        sa.Column("deadline", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("presumed_countries", sa.JSON(), nullable=False),
        sa.Column("legal_basis", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=False),
        sa.Column("status_changed_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["created_by"], ["principals.id"], name=op.f("fk_cases_created_by_principals")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cases")),
        sa.UniqueConstraint("agency", "external_ref", name="agency_external_ref"),
    )
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_cases_agency"), ["agency"], unique=False)
        batch_op.create_index(batch_op.f("ix_cases_deadline"), ["deadline"], unique=False)
        batch_op.create_index(batch_op.f("ix_cases_status"), ["status"], unique=False)

    op.create_table(
        "searches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("modality", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("dimension", sa.Integer(), nullable=False),
        sa.Column("metric", sa.String(length=16), nullable=False),
        sa.Column("probes", sa.LargeBinary(), nullable=True),
        sa.Column("probe_count", sa.Integer(), nullable=False),
        sa.Column("targets", sa.JSON(), nullable=False),
        sa.Column("skipped", sa.JSON(), nullable=False),
        sa.Column("max_candidates", sa.Integer(), nullable=False),
        sa.Column("target_fpir", sa.Float(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("deadline", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("submitted_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", app.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", app.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("submitted_by", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], name=op.f("fk_searches_case_id_cases")),
        sa.ForeignKeyConstraint(["submitted_by"], ["principals.id"], name=op.f("fk_searches_submitted_by_principals")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_searches")),
    )
    with op.batch_alter_table("searches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_searches_case_id"), ["case_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_searches_status"), ["status"], unique=False)

    op.create_table(
        "candidates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("search_id", sa.Integer(), nullable=False),
        sa.Column("gallery_id", sa.Integer(), nullable=False),
        sa.Column("record_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("reference_id", sa.String(length=128), nullable=False),
        sa.Column("country", sa.String(length=3), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("band", sa.String(length=16), nullable=False),
        sa.Column("threshold_match", sa.Float(), nullable=False),
        sa.Column("threshold_possible", sa.Float(), nullable=False),
        sa.Column("review_state", sa.String(length=16), nullable=False),
        sa.Column("reviewed_by", sa.Integer(), nullable=True),
        sa.Column("reviewed_at", app.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("note", sa.String(length=2000), nullable=True),
        sa.ForeignKeyConstraint(["gallery_id"], ["galleries.id"], name=op.f("fk_candidates_gallery_id_galleries")),
        sa.ForeignKeyConstraint(
            ["record_id"], ["records.id"], name=op.f("fk_candidates_record_id_records"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(["reviewed_by"], ["principals.id"], name=op.f("fk_candidates_reviewed_by_principals")),
        sa.ForeignKeyConstraint(["search_id"], ["searches.id"], name=op.f("fk_candidates_search_id_searches")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_candidates")),
    )
    with op.batch_alter_table("candidates", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_candidates_country"), ["country"], unique=False)
        batch_op.create_index(batch_op.f("ix_candidates_review_state"), ["review_state"], unique=False)
        batch_op.create_index(batch_op.f("ix_candidates_search_id"), ["search_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("candidates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_candidates_search_id"))
        batch_op.drop_index(batch_op.f("ix_candidates_review_state"))
        batch_op.drop_index(batch_op.f("ix_candidates_country"))

    op.drop_table("candidates")
    with op.batch_alter_table("searches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_searches_status"))
        batch_op.drop_index(batch_op.f("ix_searches_case_id"))

    op.drop_table("searches")
    with op.batch_alter_table("cases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cases_status"))
        batch_op.drop_index(batch_op.f("ix_cases_deadline"))
        batch_op.drop_index(batch_op.f("ix_cases_agency"))

    op.drop_table("cases")
