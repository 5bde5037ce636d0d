"""Issue 20: provider had the order; requeries after an uncertain refund

Revision ID: 0011_refund_rechecks
Revises: 0010_customer_journey

Issue 20, item 4. ``payments.pay_answer_began``: the pay's
answer had begun to arrive when the call ended, so a "never received" is
never believed. A payment refunded while its outcome was uncertain is asked
about again after the refund (``recheck_after_refund_at``,
``rechecks_after_refund``); a delivery found then is flagged
``delivered_after_refund`` with its proof (``late_token``,
``late_receipt_reference``) for admins. New columns with server defaults or
nullable, and one index: no batch rebuild needed on SQLite.
"""
import sqlalchemy as sa
from alembic import op

revision = "0011_refund_rechecks"
down_revision = "0010_customer_journey"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("payments", sa.Column("pay_answer_began", sa.Boolean(), server_default=sa.false(),
                                        nullable=False))
    op.add_column("payments", sa.Column("recheck_after_refund_at", sa.DateTime(timezone=True),
                                        nullable=True))
    op.add_column("payments", sa.Column("rechecks_after_refund", sa.Integer(), server_default="0",
                                        nullable=False))
    op.add_column("payments", sa.Column("delivered_after_refund", sa.Boolean(),
                                        server_default=sa.false(), nullable=False))
    op.add_column("payments", sa.Column("late_token", sa.String(length=20), nullable=True))
    op.add_column("payments", sa.Column("late_receipt_reference", sa.String(length=64), nullable=True))
    op.create_index("ix_payments_recheck_after_refund_at", "payments", ["recheck_after_refund_at"])


def downgrade():
    op.drop_index("ix_payments_recheck_after_refund_at", table_name="payments")
    with op.batch_alter_table("payments") as batch:
        batch.drop_column("late_receipt_reference")
        batch.drop_column("late_token")
        batch.drop_column("delivered_after_refund")
        batch.drop_column("rechecks_after_refund")
        batch.drop_column("recheck_after_refund_at")
        batch.drop_column("pay_answer_began")
