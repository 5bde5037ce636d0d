"""web tier: meter verification cache, worker heartbeats, payments.request_id

Revision ID: 0008_web_tier
Revises: 0007_security

The cache and heartbeat tables are new; ``payments.request_id`` is a nullable
column (payments made before it have none).
"""
import sqlalchemy as sa
from alembic import op

revision = "0008_web_tier"
down_revision = "0007_security"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "meter_verifications",
        sa.Column("service_id", sa.String(length=40), nullable=False),
        sa.Column("meter_type", sa.String(length=16), nullable=False),
        sa.Column("meter_number", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("customer_name", sa.String(length=200), nullable=True),
        sa.Column("address", sa.String(length=300), nullable=True),
        sa.Column("min_purchase_kobo", sa.BigInteger(), nullable=True),
        sa.Column("message", sa.String(length=500), nullable=True),
        sa.Column("other_meter_type", sa.String(length=16), nullable=True),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("status IN ('valid', 'invalid')", name=op.f("ck_meter_verifications_status_known")),
        sa.PrimaryKeyConstraint("service_id", "meter_type", "meter_number", name=op.f("pk_meter_verifications")),
    )
    op.create_index(op.f("ix_meter_verifications_expires_at"), "meter_verifications", ["expires_at"])
    op.create_table(
        "worker_heartbeats",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_worker_heartbeats")),
    )
    op.add_column("payments", sa.Column("request_id", sa.String(length=64), nullable=True))


def downgrade():
    with op.batch_alter_table("payments") as batch:
        batch.drop_column("request_id")
    op.drop_table("worker_heartbeats")
    op.drop_index(op.f("ix_meter_verifications_expires_at"), table_name="meter_verifications")
    op.drop_table("meter_verifications")
