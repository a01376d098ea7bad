"""deduplication jobs and their pairs; links between cases and the searches already compared

Searches that ended before this revision are marked compared: links are made from the
identifications that end after it, not from the history.

Revision ID: 0020 (assigned 0016, which main's multimodal quality took meanwhile)
Revises: 0019 (main's head when this was rebased; the lead re-chains it at merge)
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

import app.db.base

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deduplication_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("gallery_id", sa.Integer(), nullable=False),
        sa.Column("requested_by", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("target_fmr", sa.Float(), nullable=True),
        sa.Column("max_pairs", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=True),
        sa.Column("change_seq", sa.BigInteger(), nullable=True),
        sa.Column("blocks_done", sa.Integer(), nullable=False),
        sa.Column("blocks_total", sa.Integer(), nullable=True),
        sa.Column("match_threshold", sa.Float(), nullable=True),
        sa.Column("possible_threshold", sa.Float(), nullable=True),
        sa.Column("expected_false_pairs", sa.Float(), nullable=True),
        sa.Column("tail", sa.JSON(), nullable=True),
        sa.Column("pairs_found", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(length=200), nullable=True),
        sa.Column("submitted_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", app.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", app.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_expires", app.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["gallery_id"], ["galleries.id"], name=op.f("fk_deduplication_jobs_gallery_id_galleries")
        ),
        sa.ForeignKeyConstraint(
            ["requested_by"], ["principals.id"], name=op.f("fk_deduplication_jobs_requested_by_principals")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deduplication_jobs")),
    )
    with op.batch_alter_table("deduplication_jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_deduplication_jobs_gallery_id"), ["gallery_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_deduplication_jobs_status"), ["status"], unique=False)

    op.create_table(
        "deduplication_pairs",
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("reference_id_a", sa.String(length=128), nullable=False),
        sa.Column("reference_id_b", sa.String(length=128), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("band", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["deduplication_jobs.id"],
            name=op.f("fk_deduplication_pairs_job_id_deduplication_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_id", "reference_id_a", "reference_id_b", name=op.f("pk_deduplication_pairs")),
    )
    op.create_table(
        "case_link_checks",
        sa.Column("search_id", sa.Integer(), nullable=False),
        sa.Column("checked_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["search_id"], ["searches.id"], name=op.f("fk_case_link_checks_search_id_searches")),
        sa.PrimaryKeyConstraint("search_id", name=op.f("pk_case_link_checks")),
    )
    op.create_table(
        "case_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("linked_case_id", sa.Integer(), nullable=False),
        sa.Column("search_id", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("band", sa.String(length=16), nullable=False),
        sa.Column("found_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], name=op.f("fk_case_links_case_id_cases")),
        sa.ForeignKeyConstraint(["linked_case_id"], ["cases.id"], name=op.f("fk_case_links_linked_case_id_cases")),
        sa.ForeignKeyConstraint(["search_id"], ["searches.id"], name=op.f("fk_case_links_search_id_searches")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_links")),
        sa.UniqueConstraint("case_id", "linked_case_id", name="case_linked_case"),
    )
    op.execute(
        "INSERT INTO case_link_checks (search_id, checked_at) "
        "SELECT id, CURRENT_TIMESTAMP FROM searches WHERE status IN ('done', 'failed', 'expired')"
    )


def downgrade() -> None:
    op.drop_table("case_links")
    op.drop_table("case_link_checks")
    op.drop_table("deduplication_pairs")
    with op.batch_alter_table("deduplication_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deduplication_jobs_status"))
        batch_op.drop_index(batch_op.f("ix_deduplication_jobs_gallery_id"))

    op.drop_table("deduplication_jobs")
