"""admin list indexes: payments by status and by disco, newest first

Revision ID: 0002_admin_indexes
Revises: 0001
"""
from alembic import op

revision = "0002_admin_indexes"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.create_index("ix_payments_status_created_at", ["status", "created_at"], unique=False)
        batch_op.create_index("ix_payments_service_id_created_at", ["service_id", "created_at"], unique=False)


def downgrade():
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_index("ix_payments_service_id_created_at")
        batch_op.drop_index("ix_payments_status_created_at")
