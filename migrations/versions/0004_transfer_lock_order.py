"""transfer lock order: transfer row first, wallets in descending id order

Revision ID: 0004_transfer_lock_order
Revises: 0003_transfer_function

billvend_post_transfer now inserts the transfer before it locks any wallet,
then locks each wallet with its own UPDATE in descending id order, so the
hot system wallets are held for the shortest time (billvend/vending/models.py,
TRANSFER_FUNCTION_SQL, says why; bench/hot_wallet.py measures it). The
transfer's two wallet foreign keys become DEFERRABLE INITIALLY DEFERRED so
that early insert does not take KEY SHARE on a wallet another transfer
holds. Both function bodies are frozen here on purpose.
"""
import sqlalchemy as sa
from alembic import op

revision = "0004_transfer_lock_order"
down_revision = "0003_transfer_function"
branch_labels = None
depends_on = None

WALLET_FOREIGN_KEYS = (
    ("fk_transfers_debit_wallet_id_wallets", "debit_wallet_id"),
    ("fk_transfers_credit_wallet_id_wallets", "credit_wallet_id"),
)

FUNCTION_SQL = """
CREATE OR REPLACE FUNCTION billvend_post_transfer(
    p_kind VARCHAR, p_debit_id INTEGER, p_credit_id INTEGER, p_amount_kobo BIGINT,
    p_payment_id INTEGER, p_funding_id INTEGER, p_description VARCHAR, p_now TIMESTAMPTZ,
    OUT found_wallets INTEGER, OUT transfer_id INTEGER,
    OUT debit_balance_kobo BIGINT, OUT debit_version INTEGER,
    OUT credit_balance_kobo BIGINT, OUT credit_version INTEGER)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    INSERT INTO transfers (kind, debit_wallet_id, credit_wallet_id, amount_kobo,
                           payment_id, funding_id, description, created_at)
    VALUES (p_kind, p_debit_id, p_credit_id, p_amount_kobo,
            p_payment_id, p_funding_id, p_description, p_now)
    RETURNING id INTO transfer_id;

    IF p_debit_id > p_credit_id THEN
        -- System wallets may run negative: funding mirrors all money that came in.
        UPDATE wallets SET balance_kobo = balance_kobo - p_amount_kobo, version = version + 1
         WHERE id = p_debit_id AND (user_id IS NULL OR balance_kobo >= p_amount_kobo)
        RETURNING balance_kobo, version INTO debit_balance_kobo, debit_version;
        IF FOUND THEN
            UPDATE wallets SET balance_kobo = balance_kobo + p_amount_kobo, version = version + 1
             WHERE id = p_credit_id
            RETURNING balance_kobo, version INTO credit_balance_kobo, credit_version;
            IF NOT FOUND THEN
                UPDATE wallets SET balance_kobo = balance_kobo + p_amount_kobo,
                                   version = version - 1
                 WHERE id = p_debit_id;
            END IF;
        END IF;
    ELSE
        UPDATE wallets SET balance_kobo = balance_kobo + p_amount_kobo, version = version + 1
         WHERE id = p_credit_id
        RETURNING balance_kobo, version INTO credit_balance_kobo, credit_version;
        IF FOUND THEN
            UPDATE wallets SET balance_kobo = balance_kobo - p_amount_kobo, version = version + 1
             WHERE id = p_debit_id AND (user_id IS NULL OR balance_kobo >= p_amount_kobo)
            RETURNING balance_kobo, version INTO debit_balance_kobo, debit_version;
            IF NOT FOUND THEN
                UPDATE wallets SET balance_kobo = balance_kobo - p_amount_kobo,
                                   version = version - 1
                 WHERE id = p_credit_id;
            END IF;
        END IF;
    END IF;

    IF debit_version IS NULL OR credit_version IS NULL THEN
        DELETE FROM transfers WHERE id = transfer_id;
        SELECT count(*) INTO found_wallets FROM wallets WHERE id IN (p_debit_id, p_credit_id);
        transfer_id := NULL;
        debit_balance_kobo := NULL;
        debit_version := NULL;
        credit_balance_kobo := NULL;
        credit_version := NULL;
        RETURN;
    END IF;
    found_wallets := 2;

    INSERT INTO ledger_entries (transfer_id, wallet_id, delta_kobo, balance_after_kobo,
                                wallet_version, created_at)
    VALUES (transfer_id, p_debit_id, -p_amount_kobo, debit_balance_kobo, debit_version, p_now),
           (transfer_id, p_credit_id, p_amount_kobo, credit_balance_kobo, credit_version, p_now);
END
$$
"""

# 0003_transfer_function's body, for downgrade.
PREVIOUS_FUNCTION_SQL = """
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


def _set_wallet_foreign_keys(deferred: bool) -> None:
    if op.get_bind().dialect.name == "postgresql":
        mode = "DEFERRABLE INITIALLY DEFERRED" if deferred else "NOT DEFERRABLE"
        for name, _column in WALLET_FOREIGN_KEYS:
            op.execute(f"ALTER TABLE transfers ALTER CONSTRAINT {name} {mode}")
        return
    # SQLite cannot alter a constraint: batch mode rebuilds the table.
    options = {"deferrable": True, "initially": "DEFERRED"} if deferred else {}
    with op.batch_alter_table("transfers", recreate="always") as batch_op:
        for name, column in WALLET_FOREIGN_KEYS:
            batch_op.drop_constraint(name, type_="foreignkey")
            batch_op.create_foreign_key(name, "wallets", [column], ["id"], **options)


def upgrade():
    _set_wallet_foreign_keys(deferred=True)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(FUNCTION_SQL)


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute(PREVIOUS_FUNCTION_SQL)
    _set_wallet_foreign_keys(deferred=False)
