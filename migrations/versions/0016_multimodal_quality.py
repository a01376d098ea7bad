"""multi-modal identification and sample quality

A multi-modal search keeps its modalities (per modality: its template format, probe count and
galleries) beside its probes, which stay in ``searches.probes``, sealed as before (one blob, each
modality's float32 rows in turn), so that retention erases them all at once. A search keeps its
probe samples' qualities and the samples it dropped below the configured minimum; a candidate of
a multi-modal search keeps its per-modality scores. None of these columns holds biometric data.

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("searches") as batch:
        batch.add_column(sa.Column("modalities", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("probe_qualities", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("dropped_samples", sa.JSON(), nullable=True))
    with op.batch_alter_table("candidates") as batch:
        batch.add_column(sa.Column("modalities", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("candidates") as batch:
        batch.drop_column("modalities")
    with op.batch_alter_table("searches") as batch:
        batch.drop_column("dropped_samples")
        batch.drop_column("probe_qualities")
        batch.drop_column("modalities")
