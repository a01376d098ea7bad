"""data keys for encryption at rest

One row per data key (a gallery's, and the probes'), wrapped by the master key kept outside the
database. The migration cannot seal the templates and probes already stored: it does not hold
the master key. The next start of the service (or any command that opens the galleries, such as
``readmit enrol``) with encryption on finds the galleries that have no data key, gives each one
and seals its templates and the stored probes in the same transaction (app/encryption/service.py
``seal_clear_data``); until then a database upgraded by ``readmit db upgrade`` alone still holds
clear text.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

import app.db.base

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "data_keys",
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("master_key_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("wrapped_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("scope", name=op.f("pk_data_keys")),
    )


def downgrade() -> None:
    if op.get_bind().execute(sa.text("SELECT count(*) FROM data_keys")).scalar_one():
        raise RuntimeError("templates or probes are sealed: dropping their data keys would lose them")
    op.drop_table("data_keys")
