"""notif3 (issue 23): where a customer's payment messages go

Revision ID: 0016_token_channels
Revises: 0015_phones

users.token_channels: "both" (the default, for every existing account),
"sms" or "email"; the token and refund messages follow it, security mail
does not. A batch rebuild on SQLite (a CHECK cannot be added in place).
"""
import sqlalchemy as sa
from alembic import op

revision = "0016_token_channels"
down_revision = "0015_phones"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("token_channels", sa.String(length=10), server_default="both",
                                   nullable=False))
        batch.create_check_constraint(op.f("ck_users_token_channels_known"), "token_channels IN ('both', 'sms', 'email')")


def downgrade():
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint(op.f("ck_users_token_channels_known"), type_="check")
        batch.drop_column("token_channels")
