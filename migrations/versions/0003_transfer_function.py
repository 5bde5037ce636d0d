"""transfer function: the PostgreSQL transfer as one PL/pgSQL function

Revision ID: 0003_transfer_function
Revises: 0002_admin_indexes

billvend.ledger.services.post_transfer calls billvend_post_transfer on PostgreSQL
(see billvend/vending/models.py, TRANSFER_FUNCTION_SQL, for why). SQLite has no
stored functions: nothing to do there. The body is frozen here on purpose:
a later change to the function is a later migration.
"""
from alembic import op

revision = "0003_transfer_function"
down_revision = "0002_admin_indexes"
branch_labels = None
depends_on = None

FUNCTION_SQL = """
CREATE OR REPLACE FUNCTION billvend_post_transfer(
    p_kind VARCHAR, p_debit_id INTEGER, p_credit_id INTEGER, p_amount_kobo BIGINT,
    p_payment_id INTEGER, p_funding_id INTEGER, p_description VARCHAR, p_now TIMESTAMPTZ,
    OUT found_wallets INTEGER, OUT transfer_id INTEGER,
    OUT debit_balance_kobo BIGINT, OUT debit_version INTEGER,
    OUT credit_balance_kobo BIGINT, OUT credit_version INTEGER)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM 1 FROM wallets WHERE id IN (p_debit_id, p_credit_id)
     ORDER BY id FOR NO KEY UPDATE;
    GET DIAGNOSTICS found_wallets = ROW_COUNT;
    IF found_wallets <> 2 THEN
        RETURN;
    END IF;
    -- System wallets may run negative: funding mirrors all money that came in.
    UPDATE wallets SET balance_kobo = balance_kobo - p_amount_kobo, version = version + 1
     WHERE id = p_debit_id AND (user_id IS NULL OR balance_kobo >= p_amount_kobo)
    RETURNING balance_kobo, version INTO debit_balance_kobo, debit_version;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    UPDATE wallets SET balance_kobo = balance_kobo + p_amount_kobo, version = version + 1
     WHERE id = p_credit_id
    RETURNING balance_kobo, version INTO credit_balance_kobo, credit_version;
    INSERT INTO transfers (kind, debit_wallet_id, credit_wallet_id, amount_kobo,
                           payment_id, funding_id, description, created_at)
    VALUES (p_kind, p_debit_id, p_credit_id, p_amount_kobo,
            p_payment_id, p_funding_id, p_description, p_now)
    RETURNING id INTO transfer_id;
    INSERT INTO ledger_entries (transfer_id, wallet_id, delta_kobo, balance_after_kobo,
                                wallet_version, created_at)
    VALUES (transfer_id, p_debit_id, -p_amount_kobo, debit_balance_kobo, debit_version, p_now),
           (transfer_id, p_credit_id, p_amount_kobo, credit_balance_kobo, credit_version, p_now);
END
$$
"""


def upgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION_SQL)


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS billvend_post_transfer")
