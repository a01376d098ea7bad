"""record history: records carry their version and who wrote it; the versions they replaced and
their erasures are kept in record_versions; candidates pin the version they matched

A record's current version stays in its row (``version``: 1 at enrolment; ``updated_by``), so
that a bulk enrolment writes nothing more than before; an update or an erasure first copies the
version it ends into ``record_versions`` (attributes and a SHA-256 digest of the templates, never
the templates). Records enrolled before this revision are at version 1 and have no
``updated_by`` (their current version is their enrolment). Candidates found before have no
``record_version``.

The columns are added in place (no copy of the records table, which may hold millions of rows):
SQLite takes a column with a foreign key in ALTER TABLE when its default is null.

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

import app.db.base

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "record_versions",
        sa.Column("gallery_id", sa.Integer(), nullable=False),
        sa.Column("reference_id", sa.String(length=128), nullable=False),
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("change", sa.String(length=16), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=True),
        sa.Column("template_digest", sa.LargeBinary(length=32), nullable=True),
        sa.Column("template_count", sa.Integer(), nullable=False),
        sa.Column("changed_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("changed_by", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["gallery_id"], ["galleries.id"], name=op.f("fk_record_versions_gallery_id_galleries")),
        sa.ForeignKeyConstraint(
            ["changed_by"], ["principals.id"], name=op.f("fk_record_versions_changed_by_principals")
        ),
        sa.PrimaryKeyConstraint("gallery_id", "reference_id", "version", name=op.f("pk_record_versions")),
    )
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "ALTER TABLE records ADD COLUMN updated_by INTEGER "
            "CONSTRAINT fk_records_updated_by_principals REFERENCES principals (id)"
        )
    else:
        op.add_column("records", sa.Column("updated_by", sa.Integer(), nullable=True))
        op.create_foreign_key(op.f("fk_records_updated_by_principals"), "records", "principals", ["updated_by"], ["id"])
    op.add_column("records", sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False))
    op.add_column("candidates", sa.Column("record_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("candidates") as batch:
        batch.drop_column("record_version")
    with op.batch_alter_table("records") as batch:
        batch.drop_column("version")
        if op.get_bind().dialect.name != "sqlite":
            batch.drop_constraint(batch.f("fk_records_updated_by_principals"), type_="foreignkey")
        batch.drop_column("updated_by")
    op.drop_table("record_versions")
