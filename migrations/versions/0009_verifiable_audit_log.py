"""verifiable audit log: the Merkle tree over audit events (perfect subtree hashes and its
head), signed checkpoints, and the countries each event touches

Events already recorded are put in the tree by the service's sequencer at its first start, in
order; they touch no country (their countries were never recorded), so only an auditor without
a country sees them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26
"""

import hashlib

import sqlalchemy as sa
from alembic import op

import app.db.base

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "audit_event_countries",
        sa.Column("country", sa.String(length=3), nullable=False),
        sa.Column("seq", SEQ, autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("country", "seq", name=op.f("pk_audit_event_countries")),
    )
    op.create_table(
        "audit_tree_nodes",
        sa.Column("level", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("idx", SEQ, autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx", name=op.f("pk_audit_tree_nodes")),
    )
    op.create_table(
        "audit_tree_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("root", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_tree_head")),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("size", SEQ, autoincrement=False, nullable=False),
        sa.Column("root", sa.String(length=64), nullable=False),
        sa.Column("signed_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("size", name=op.f("pk_audit_checkpoints")),
    )
    op.bulk_insert(
        sa.table("audit_tree_head", sa.column("id"), sa.column("size"), sa.column("root")),
        [{"id": 1, "size": 0, "root": hashlib.sha256(b"").hexdigest()}],
    )


def downgrade() -> None:
    op.drop_table("audit_checkpoints")
    op.drop_table("audit_tree_head")
    op.drop_table("audit_tree_nodes")
    op.drop_table("audit_event_countries")
