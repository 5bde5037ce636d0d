"""p2p27 (issue 27): transfers between customers

Revision ID: 0019_p2p_transfers
Revises: 0018_phone_verification

p2p_transfers: one row per customer-to-customer transfer, UNIQUE (sender,
idempotency key). transfers gains p2p_transfer_id (UNIQUE: one ledger
transfer per p2p row) and the kind ``p2p`` in its kind_known CHECK. The
PostgreSQL transfer function is unchanged (it takes no link; the ledger sets
p2p_transfer_id on the row it wrote, billvend.ledger.services). SQLite
rebuilds transfers in batch mode (a CHECK cannot be altered in place); the
rebuild keeps the deferred wallet foreign keys of 0004.
"""
import sqlalchemy as sa
from alembic import op


revision = "0019_p2p_transfers"
down_revision = "0018_phone_verification"
branch_labels = None
depends_on = None

KINDS_BEFORE = "kind IN ('funding', 'bill_payment', 'reversal', 'adjustment')"
KINDS_AFTER = "kind IN ('funding', 'bill_payment', 'reversal', 'adjustment', 'p2p')"


def upgrade():
    op.create_table(
        "p2p_transfers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(length=32), nullable=False),
        sa.Column("sender_id", sa.Integer(), nullable=False),
        sa.Column("recipient_id", sa.Integer(), nullable=False),
        sa.Column("sender_wallet_id", sa.Integer(), nullable=False),
        sa.Column("recipient_wallet_id", sa.Integer(), nullable=False),
        sa.Column("amount_kobo", sa.BigInteger(), nullable=False),
        sa.Column("note", sa.String(length=140), nullable=True),
        sa.Column("idempotency_key", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount_kobo > 0", name=op.f("ck_p2p_transfers_amount_positive")),
        sa.CheckConstraint("sender_id <> recipient_id", name=op.f("ck_p2p_transfers_distinct_users")),
        sa.ForeignKeyConstraint(["sender_id"], ["users.id"], name=op.f("fk_p2p_transfers_sender_id_users")),
        sa.ForeignKeyConstraint(["recipient_id"], ["users.id"],
                                name=op.f("fk_p2p_transfers_recipient_id_users")),
        sa.ForeignKeyConstraint(["sender_wallet_id"], ["wallets.id"],
                                name=op.f("fk_p2p_transfers_sender_wallet_id_wallets")),
        sa.ForeignKeyConstraint(["recipient_wallet_id"], ["wallets.id"],
                                name=op.f("fk_p2p_transfers_recipient_wallet_id_wallets")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_p2p_transfers")),
        sa.UniqueConstraint("reference", name=op.f("uq_p2p_transfers_reference")),
        sa.UniqueConstraint("sender_id", "idempotency_key", name=op.f("uq_p2p_transfers_sender_id_idempotency_key")),
    )
    op.create_index("ix_p2p_transfers_sender_id_recipient_id", "p2p_transfers",
                    ["sender_id", "recipient_id"], unique=False)
    op.create_index("ix_p2p_transfers_recipient_id", "p2p_transfers", ["recipient_id"], unique=False)
    with op.batch_alter_table("transfers") as batch:
        batch.add_column(sa.Column("p2p_transfer_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(op.f("fk_transfers_p2p_transfer_id_p2p_transfers"), "p2p_transfers",
                                 ["p2p_transfer_id"], ["id"])
        batch.create_unique_constraint(op.f("uq_transfers_p2p_transfer_id"), ["p2p_transfer_id"])
        batch.drop_constraint(op.f("ck_transfers_kind_known"), type_="check")
        batch.create_check_constraint(op.f("ck_transfers_kind_known"), KINDS_AFTER)


def downgrade():
    bind = op.get_bind()
    if bind.execute(sa.text("SELECT count(*) FROM transfers WHERE kind = 'p2p'")).scalar():
        raise RuntimeError("0019_p2p_transfers: p2p transfers exist; a downgrade would lose their money")
    with op.batch_alter_table("transfers") as batch:
        batch.drop_constraint(op.f("ck_transfers_kind_known"), type_="check")
        batch.create_check_constraint(op.f("ck_transfers_kind_known"), KINDS_BEFORE)
        batch.drop_constraint(op.f("uq_transfers_p2p_transfer_id"), type_="unique")
        batch.drop_constraint(op.f("fk_transfers_p2p_transfer_id_p2p_transfers"), type_="foreignkey")
        batch.drop_column("p2p_transfer_id")
    op.drop_index("ix_p2p_transfers_recipient_id", table_name="p2p_transfers")
    op.drop_index("ix_p2p_transfers_sender_id_recipient_id", table_name="p2p_transfers")
    op.drop_table("p2p_transfers")
