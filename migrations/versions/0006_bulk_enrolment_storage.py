"""storage for bulk enrolment: templates inline and uncompressed on PostgreSQL, record ids
reserved from a cached sequence, no second index on records.gallery_id

A 512-d template is 2,048 bytes, just over the size (about 2 kB) at which PostgreSQL compresses
a value and moves it out of the row into TOAST: every insert tried pglz on float noise, wrote
two TOAST rows and a TOAST index entry, and every index rebuild read them back. Rows up to a
page (templates of up to about 2,000 dimensions) now stay in the table; larger ones still go
out of line, never compressed. SQLite keeps such a value in the row anyway.

Enrolment reserves the ids of a batch's new records from the records' sequence in one statement
(app/db/bulk.py); a cache of 1,000 values per session spares a sequence lock and a WAL record
for every 32 ids. Ids stay unique; only their order across concurrent sessions changes, which
nothing relies on.

Every insert into records also updated ix_records_gallery_id, which the unique index of
(gallery_id, reference_id) already serves: a lookup by gallery uses its first column.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("records") as batch:
        batch.drop_index("ix_records_gallery_id")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE templates ALTER COLUMN vector SET STORAGE EXTERNAL")
        op.execute("ALTER TABLE templates SET (toast_tuple_target = 8160)")
        op.execute("ALTER SEQUENCE records_id_seq CACHE 1000")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER SEQUENCE records_id_seq CACHE 1")
        op.execute("ALTER TABLE templates RESET (toast_tuple_target)")
        op.execute("ALTER TABLE templates ALTER COLUMN vector SET STORAGE EXTENDED")
    with op.batch_alter_table("records") as batch:
        batch.create_index("ix_records_gallery_id", ["gallery_id"], unique=False)
