"""adjust27 (issue 27): admin adjustments and bonuses with four-eyes approval

Revision ID: 0020_adjustments
Revises: 0019_p2p_transfers

adjustments: one row per proposed credit, debit or bonus to a customer's
wallet, its proposer, its 24 h window, its decision by a second admin (a
CHECK keeps the decider apart from the proposer) and, once approved, the
ledger transfer that posted it. transfers.adjustment_id (a nullable foreign
key, UNIQUE with the kind: one posting per adjustment, enforced by the
database); the transfer kind ``bonus`` joins the ``kind_known`` CHECK;
admin_actions.adjustment_id for the audit trail of each step. The system
wallets ``adjustments`` and ``promotions`` are seeded at zero (a downgrade
leaves them: it never rewrites the books; it refuses while any adjustment
or bonus is posted).

The PostgreSQL transfer function (0003/0004) is unchanged: it takes any
kind (the CHECK decides), and ledger.post_transfer sets adjustment_id with
an UPDATE of the row it inserted. SQLite rebuilds transfers and
admin_actions in batch mode (a constraint cannot be added in place).

Merging with 0019 (p2p transfers, which adds the kind ``p2p``): keep
KINDS_BEFORE / KINDS_AFTER below equal to the kinds the chain has there.
"""
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op


revision = "0020_adjustments"
down_revision = "0019_p2p_transfers"
branch_labels = None
depends_on = None

KINDS_BEFORE = ("funding", "bill_payment", "reversal", "adjustment", "p2p")
KINDS_AFTER = KINDS_BEFORE + ("bonus",)
SYSTEM_CODES = ("adjustments", "promotions")


def _kinds_check(kinds) -> str:
    return "kind IN ({})".format(", ".join(f"'{k}'" for k in kinds))


def _set_kinds(batch_op, kinds) -> None:
    batch_op.drop_constraint(op.f("ck_transfers_kind_known"), type_="check")
    batch_op.create_check_constraint("kind_known", _kinds_check(kinds))


def upgrade():
    op.create_table(
        "adjustments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("wallet_id", sa.Integer(), nullable=False),
        sa.Column("direction", sa.String(length=10), nullable=False),
        sa.Column("amount_kobo", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("proposed_by_id", sa.Integer(), nullable=False),
        sa.Column("proposed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by_id", sa.Integer(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision_reason", sa.String(length=500), nullable=True),
        sa.Column("transfer_id", sa.Integer(), nullable=True),
        sa.CheckConstraint("amount_kobo > 0", name=op.f("ck_adjustments_amount_positive")),
        sa.CheckConstraint("direction IN ('credit', 'debit', 'bonus')",
                           name=op.f("ck_adjustments_direction_known")),
        sa.CheckConstraint("status IN ('proposed', 'approved', 'rejected', 'expired')",
                           name=op.f("ck_adjustments_status_known")),
        sa.CheckConstraint("decided_by_id IS NULL OR decided_by_id <> proposed_by_id",
                           name=op.f("ck_adjustments_four_eyes")),
        sa.CheckConstraint("(status = 'approved') = (transfer_id IS NOT NULL)",
                           name=op.f("ck_adjustments_posted_iff_approved")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_adjustments_user_id_users")),
        sa.ForeignKeyConstraint(["wallet_id"], ["wallets.id"], name=op.f("fk_adjustments_wallet_id_wallets")),
        sa.ForeignKeyConstraint(["proposed_by_id"], ["users.id"],
                                name=op.f("fk_adjustments_proposed_by_id_users")),
        sa.ForeignKeyConstraint(["decided_by_id"], ["users.id"],
                                name=op.f("fk_adjustments_decided_by_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_adjustments")),
        sa.UniqueConstraint("transfer_id", name=op.f("uq_adjustments_transfer_id")),
    )
    op.create_index(op.f("ix_adjustments_user_id"), "adjustments", ["user_id"], unique=False)
    op.create_index("ix_adjustments_status_expires_at", "adjustments", ["status", "expires_at"],
                    unique=False)
    with op.batch_alter_table("transfers") as batch_op:
        batch_op.add_column(sa.Column("adjustment_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(op.f("fk_transfers_adjustment_id_adjustments"), "adjustments",
                                    ["adjustment_id"], ["id"])
        batch_op.create_unique_constraint(op.f("uq_transfers_adjustment_id_kind"),
                                          ["adjustment_id", "kind"])
        _set_kinds(batch_op, KINDS_AFTER)
    with op.batch_alter_table("admin_actions") as batch_op:
        batch_op.add_column(sa.Column("adjustment_id", sa.Integer(), nullable=True))
        batch_op.create_index(op.f("ix_admin_actions_adjustment_id"), ["adjustment_id"], unique=False)
        batch_op.create_foreign_key(op.f("fk_admin_actions_adjustment_id_adjustments"), "adjustments",
                                    ["adjustment_id"], ["id"])
    # Seeded once: a downgrade keeps them (it never rewrites the books), so an upgrade
    # after it finds them already there.
    now = datetime.now(timezone.utc)
    for code in SYSTEM_CODES:
        op.get_bind().execute(sa.text(
            "INSERT INTO wallets (system_code, balance_kobo, version, created_at) "
            "SELECT CAST(:code AS VARCHAR(32)), 0, 0, :now WHERE NOT EXISTS "
            "(SELECT 1 FROM wallets WHERE system_code = CAST(:code AS VARCHAR(32)))")
            .bindparams(sa.bindparam("now", type_=sa.DateTime(timezone=True))),
            {"code": code, "now": now})


def downgrade():
    # A downgrade never rewrites the books: it refuses while any adjustment or bonus
    # is posted (their transfers would lose their kind or their record).
    bind = op.get_bind()
    posted = bind.execute(sa.text(
        "SELECT count(*) FROM transfers WHERE kind = 'bonus' OR adjustment_id IS NOT NULL")).scalar()
    if posted:
        raise RuntimeError(f"{posted} adjustment or bonus transfers are posted; "
                           "0020_adjustments cannot be downgraded without losing them")
    with op.batch_alter_table("admin_actions") as batch_op:
        batch_op.drop_constraint(op.f("fk_admin_actions_adjustment_id_adjustments"), type_="foreignkey")
        batch_op.drop_index(op.f("ix_admin_actions_adjustment_id"))
        batch_op.drop_column("adjustment_id")
    with op.batch_alter_table("transfers") as batch_op:
        _set_kinds(batch_op, KINDS_BEFORE)
        batch_op.drop_constraint(op.f("uq_transfers_adjustment_id_kind"), type_="unique")
        batch_op.drop_constraint(op.f("fk_transfers_adjustment_id_adjustments"), type_="foreignkey")
        batch_op.drop_column("adjustment_id")
    # The adjustments and promotions wallets stay (rows of the books; harmless unused).
    op.drop_index("ix_adjustments_status_expires_at", table_name="adjustments")
    op.drop_index(op.f("ix_adjustments_user_id"), table_name="adjustments")
    op.drop_table("adjustments")
