"""Issue 23 (notif1): the messages outbox

Revision ID: 0014_notifications
Revises: 0013_funding_customer_code

One row per message to one recipient on one channel, unique per
(event_key, channel, recipient) so a repeated event queues nothing twice.
A new table: nothing to convert.
"""
import sqlalchemy as sa
from alembic import op

revision = "0014_notifications"
down_revision = "0013_funding_customer_code"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_key", sa.String(length=120), nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("recipient", sa.String(length=254), nullable=False),
        sa.Column("template", sa.String(length=60), nullable=False),
        sa.Column("context", sa.JSON(), nullable=False),
        sa.Column("secret", sa.Boolean(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("provider_message_id", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("status IN ('pending', 'sent', 'failed')", name=op.f("ck_messages_status_known")),
        sa.CheckConstraint("channel IN ('email', 'sms')", name=op.f("ck_messages_channel_known")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_messages_user_id_users"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.UniqueConstraint("event_key", "channel", "recipient",
                            name=op.f("uq_messages_event_key_channel_recipient")),
    )
    op.create_index("ix_messages_status_next_attempt_at", "messages", ["status", "next_attempt_at"])
    op.create_index(op.f("ix_messages_user_id"), "messages", ["user_id"])


def downgrade():
    op.drop_index(op.f("ix_messages_user_id"), table_name="messages")
    op.drop_index("ix_messages_status_next_attempt_at", table_name="messages")
    op.drop_table("messages")
