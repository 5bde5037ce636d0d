"""customer journey: delivery details on payments; saved meters

Revision ID: 0010_customer_journey
Revises: 0009_funding_gateway

Payments keep what the disco returned with a delivery (tariff, debt
deducted, key-change tokens, the disco's exchangeReference). ``saved_meters``
holds each customer's meters (beneficiaries), saved on a successful purchase.
Only new nullable columns and a new table: no batch rebuild needed on SQLite.
"""
import sqlalchemy as sa
from alembic import op

revision = "0010_customer_journey"
down_revision = "0009_funding_gateway"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("payments", sa.Column("tariff", sa.String(length=100), nullable=True))
    op.add_column("payments", sa.Column("debt_kobo", sa.BigInteger(), nullable=True))
    op.add_column("payments", sa.Column("kct1", sa.String(length=20), nullable=True))
    op.add_column("payments", sa.Column("kct2", sa.String(length=20), nullable=True))
    op.add_column("payments", sa.Column("exchange_reference", sa.String(length=64), nullable=True))
    op.create_table(
        "saved_meters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("service_id", sa.String(length=40), nullable=False),
        sa.Column("meter_type", sa.String(length=16), nullable=False),
        sa.Column("meter_number", sa.String(length=20), nullable=False),
        sa.Column("customer_name", sa.String(length=200), nullable=True),
        sa.Column("nickname", sa.String(length=60), nullable=True),
        sa.Column("last_amount_kobo", sa.BigInteger(), nullable=False),
        sa.Column("last_phone", sa.String(length=20), nullable=False),
        sa.Column("purchase_count", sa.Integer(), server_default="1", nullable=False),
        sa.Column("last_paid_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("meter_type IN ('prepaid', 'postpaid')", name=op.f("ck_saved_meters_meter_type_known")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name=op.f("fk_saved_meters_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_saved_meters")),
        sa.UniqueConstraint("user_id", "service_id", "meter_number",
                            name=op.f("uq_saved_meters_user_id_service_id_meter_number")),
    )
    op.create_index("ix_saved_meters_user_id_last_paid_at", "saved_meters",
                    ["user_id", "last_paid_at"])


def downgrade():
    op.drop_index("ix_saved_meters_user_id_last_paid_at", table_name="saved_meters")
    op.drop_table("saved_meters")
    with op.batch_alter_table("payments") as batch:
        batch.drop_column("exchange_reference")
        batch.drop_column("kct2")
        batch.drop_column("kct1")
        batch.drop_column("debt_kobo")
        batch.drop_column("tariff")
