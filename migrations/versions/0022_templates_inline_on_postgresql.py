"""templates kept inline on PostgreSQL: a sealed 512-d template (2,077 bytes) is just over the
2 kB at which PostgreSQL compresses a row's long values and moves them to the TOAST table. For
ciphertext, which does not compress, that is a wasted compression attempt and a second table and
index written per template, and read back per template at every index load: a COPY of templates
ran at 70k rows/s against 159k with the rows kept inline (a test table of 100k, this machine).
An 8 kB page still holds three such rows. The probes of searches are ciphertext too: they are
no longer put through the compressor. SQLite has no such threshold. Rows written before this
migration stay where they are until rewritten.

Revision ID: 0022
Revises: 0021
Create Date: 2026-11-26
"""

from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

INLINE_UP_TO = 8160
"""PostgreSQL's largest toast_tuple_target: a row is put through TOAST only past this length."""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(f"ALTER TABLE templates SET (toast_tuple_target = {INLINE_UP_TO})")
    op.execute("ALTER TABLE templates ALTER COLUMN vector SET STORAGE EXTERNAL")
    op.execute("ALTER TABLE searches ALTER COLUMN probes SET STORAGE EXTERNAL")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("ALTER TABLE searches ALTER COLUMN probes SET STORAGE EXTENDED")
    op.execute("ALTER TABLE templates ALTER COLUMN vector SET STORAGE EXTENDED")
    op.execute("ALTER TABLE templates RESET (toast_tuple_target)")
