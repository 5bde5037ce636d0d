"""Issue 21: security events; the remember token a session belongs to

Revision ID: 0012_security_events
Revises: 0011_refund_rechecks

``security_events`` records what an account's owner must hear about (a
session ended after five wrong password or code re-entries, a copied
remember token noticed) and whether they have been told. ``user_sessions``
gains ``remember_selector``, so a logout on a device ends every session
started from its remember token (a copy's too). Only a new table and a new
nullable column: no batch rebuild needed on SQLite.
"""
import sqlalchemy as sa
from alembic import op

revision = "0012_security_events"
down_revision = "0011_refund_rechecks"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("user_sessions", sa.Column("remember_selector", sa.String(length=32), nullable=True))
    op.create_index(op.f("ix_user_sessions_remember_selector"), "user_sessions", ["remember_selector"])
    op.add_column("user_sessions", sa.Column("reauth_failures", sa.Integer(), server_default="0",
                                             nullable=False))
    op.create_table(
        "security_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ip_address", sa.String(length=45), nullable=True),
        sa.Column("user_agent", sa.String(length=200), nullable=True),
        sa.Column("notified_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE",
                                name=op.f("fk_security_events_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_events")),
    )
    op.create_index(op.f("ix_security_events_user_id"), "security_events", ["user_id"])


def downgrade():
    op.drop_index(op.f("ix_security_events_user_id"), table_name="security_events")
    op.drop_table("security_events")
    op.drop_index(op.f("ix_user_sessions_remember_selector"), table_name="user_sessions")
    with op.batch_alter_table("user_sessions") as batch:
        batch.drop_column("reauth_failures")
        batch.drop_column("remember_selector")
