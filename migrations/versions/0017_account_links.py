"""reset24 (issue 24): password reset and email verification links

Revision ID: 0017_account_links
Revises: 0016_token_channels

``account_links`` holds the single-use links mailed to an account's owner
(billvend.accounts.links): a password reset (30 minutes, bound to the
password it replaces by ``password_digest``) or the verification of an
address (24 hours; ``new_email`` is the address it proves). Only the
token's SHA-256 is stored. ``users.email_verified_at`` records when the
address was verified (NULL for every existing account: they are asked).
A new table and a nullable column: no batch rebuild needed on SQLite.
"""
import sqlalchemy as sa
from alembic import op

revision = "0017_account_links"
down_revision = "0016_token_channels"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("users", sa.Column("email_verified_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "account_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.String(length=20), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("new_email", sa.String(length=254), nullable=True),
        sa.Column("password_digest", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("purpose IN ('password_reset', 'verify_email')",
                           name=op.f("ck_account_links_purpose_known")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE",
                                name=op.f("fk_account_links_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_links")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_account_links_token_hash")),
    )
    op.create_index(op.f("ix_account_links_user_id"), "account_links", ["user_id"])


def downgrade():
    op.drop_index(op.f("ix_account_links_user_id"), table_name="account_links")
    op.drop_table("account_links")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("email_verified_at")
