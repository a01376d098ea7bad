"""federation: the peers a node trusts (each for one country, by its Ed25519 key), the nonces of
signed messages seen within the signature window, the searches sent to peers with the candidates
they reported, and the searches peers sent here with what was last notified to them

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

import app.db.base

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "peers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("country", sa.String(length=3), nullable=False),
        sa.Column("url", sa.String(length=500), nullable=False),
        sa.Column("public_key", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("principal_id", sa.Integer(), nullable=False),
        sa.Column("created_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("removed_at", app.db.base.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["created_by"], ["principals.id"], name=op.f("fk_peers_created_by_principals")),
        sa.ForeignKeyConstraint(["principal_id"], ["principals.id"], name=op.f("fk_peers_principal_id_principals")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_peers")),
    )
    with op.batch_alter_table("peers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_peers_country"), ["country"], unique=False)
        batch_op.create_index(batch_op.f("ix_peers_key_id"), ["key_id"], unique=False)

    op.create_table(
        "federation_nonces",
        sa.Column("peer_id", sa.Integer(), nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("seen_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["peer_id"], ["peers.id"], name=op.f("fk_federation_nonces_peer_id_peers")),
        sa.PrimaryKeyConstraint("peer_id", "nonce", name=op.f("pk_federation_nonces")),
    )
    with op.batch_alter_table("federation_nonces", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_federation_nonces_seen_at"), ["seen_at"], unique=False)

    op.create_table(
        "inbound_searches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("peer_id", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("search_id", sa.Integer(), nullable=True),
        sa.Column("created_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("notified_digest", sa.String(length=64), nullable=True),
        sa.Column("settled", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], name=op.f("fk_inbound_searches_case_id_cases")),
        sa.ForeignKeyConstraint(["peer_id"], ["peers.id"], name=op.f("fk_inbound_searches_peer_id_peers")),
        sa.ForeignKeyConstraint(["search_id"], ["searches.id"], name=op.f("fk_inbound_searches_search_id_searches")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbound_searches")),
        sa.UniqueConstraint("peer_id", "request_id", name="uq_inbound_searches_request"),
    )
    with op.batch_alter_table("inbound_searches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_inbound_searches_peer_id"), ["peer_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_inbound_searches_settled"), ["settled"], unique=False)

    op.create_table(
        "outbound_searches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("search_id", sa.Integer(), nullable=False),
        sa.Column("case_id", sa.Integer(), nullable=False),
        sa.Column("peer_id", sa.Integer(), nullable=False),
        sa.Column("country", sa.String(length=3), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("origin_ref", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.String(length=64), nullable=True),
        sa.Column("retry", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("settled", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("deadline", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], name=op.f("fk_outbound_searches_case_id_cases")),
        sa.ForeignKeyConstraint(["peer_id"], ["peers.id"], name=op.f("fk_outbound_searches_peer_id_peers")),
        sa.ForeignKeyConstraint(["search_id"], ["searches.id"], name=op.f("fk_outbound_searches_search_id_searches")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbound_searches")),
        sa.UniqueConstraint("request_id", name="uq_outbound_searches_request_id"),
    )
    with op.batch_alter_table("outbound_searches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_outbound_searches_search_id"), ["search_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_outbound_searches_settled"), ["settled"], unique=False)
        batch_op.create_index(batch_op.f("ix_outbound_searches_status"), ["status"], unique=False)

    op.create_table(
        "remote_candidates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("outbound_search_id", sa.Integer(), nullable=False),
        sa.Column("origin_candidate_id", sa.Integer(), nullable=False),
        sa.Column("reference_id", sa.String(length=128), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("band", sa.String(length=16), nullable=False),
        sa.Column("review_state", sa.String(length=32), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=True),
        sa.Column("updated_at", app.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["outbound_search_id"],
            ["outbound_searches.id"],
            name=op.f("fk_remote_candidates_outbound_search_id_outbound_searches"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_remote_candidates")),
        sa.UniqueConstraint("outbound_search_id", "origin_candidate_id", name="uq_remote_candidates_origin"),
    )
    with op.batch_alter_table("remote_candidates", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_remote_candidates_outbound_search_id"), ["outbound_search_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("remote_candidates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_remote_candidates_outbound_search_id"))

    op.drop_table("remote_candidates")
    with op.batch_alter_table("outbound_searches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbound_searches_status"))
        batch_op.drop_index(batch_op.f("ix_outbound_searches_settled"))
        batch_op.drop_index(batch_op.f("ix_outbound_searches_search_id"))

    op.drop_table("outbound_searches")
    with op.batch_alter_table("inbound_searches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inbound_searches_settled"))
        batch_op.drop_index(batch_op.f("ix_inbound_searches_peer_id"))

    op.drop_table("inbound_searches")
    with op.batch_alter_table("federation_nonces", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_federation_nonces_seen_at"))

    op.drop_table("federation_nonces")
    with op.batch_alter_table("peers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_peers_key_id"))
        batch_op.drop_index(batch_op.f("ix_peers_country"))

    op.drop_table("peers")
