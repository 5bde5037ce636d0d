"""payment lifecycle: when a pay could last be in flight; the sweep's lease

Revision ID: 0006_payment_lifecycle
Revises: 0005_user_profile

``payments.pay_in_flight_until``: the last moment a ``pay`` for the payment
could still be in flight (claim time + the provider call's hard deadline, or
when the call returned; database clock). A "never received" requery answer
is trusted only PROVIDER_NOT_FOUND_GRACE_SECONDS after it. Existing rows
keep NULL, which falls back to ``claimed_at`` (billvend.vending.lifecycle).

``leases``: named leases with an expiry from the database clock; the
sweep's "one sweeper at a time" lock (billvend.platform.leases), replacing Huey's
lock_task, which had no expiry.
"""
import sqlalchemy as sa
from alembic import op


revision = "0006_payment_lifecycle"
down_revision = "0005_user_profile"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("payments", sa.Column("pay_in_flight_until", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("holder", sa.String(length=120), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )


def downgrade():
    op.drop_table("leases")
    with op.batch_alter_table("payments") as batch:
        batch.drop_column("pay_in_flight_until")
