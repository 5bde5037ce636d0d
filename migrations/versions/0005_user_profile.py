"""user profile: full name and phone on users

Revision ID: 0005_user_profile
Revises: 0004_transfer_lock_order

Both nullable: accounts created before signup asked for them are asked once.
"""
import sqlalchemy as sa
from alembic import op

revision = "0005_user_profile"
down_revision = "0004_transfer_lock_order"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("users", sa.Column("full_name", sa.String(length=120), nullable=True))
    op.add_column("users", sa.Column("phone", sa.String(length=20), nullable=True))


def downgrade():
    with op.batch_alter_table("users") as batch:
        batch.drop_column("phone")
        batch.drop_column("full_name")
