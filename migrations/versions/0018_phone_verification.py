"""phone24 (issue 24): phone verification by SMS code

Revision ID: 0018_phone_verification
Revises: 0017_account_links

users.phone_verified_at (when the phone was proved by an SMS code) and
users.verified_phone (the phone again while it is verified, NULL otherwise;
UNIQUE, so one phone is verified on one account only: both SQLite and
PostgreSQL allow many NULLs under a UNIQUE constraint). phone_codes: one
row per code sent, the code stored as its HMAC-SHA256, with its tries,
expiry and use. Every existing phone starts unverified. A batch rebuild of
users on SQLite (a constraint cannot be added in place).
"""
import sqlalchemy as sa
from alembic import op


revision = "0018_phone_verification"
down_revision = "0017_account_links"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("phone_verified_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("verified_phone", sa.String(length=20), nullable=True))
        batch.create_unique_constraint(op.f("uq_users_verified_phone"), ["verified_phone"])
    op.create_table(
        "phone_codes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_phone_codes_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_phone_codes")),
    )
    op.create_index(op.f("ix_phone_codes_user_id"), "phone_codes", ["user_id"], unique=False)


def downgrade():
    op.drop_index(op.f("ix_phone_codes_user_id"), table_name="phone_codes")
    op.drop_table("phone_codes")
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint(op.f("uq_users_verified_phone"), type_="unique")
        batch.drop_column("verified_phone")
        batch.drop_column("phone_verified_at")
