"""The PostgreSQL transfer as one server-side function, ``billvend_post_transfer``.

``billvend.ledger.services.post_transfer`` calls it on PostgreSQL; SQLite has no
functions and runs the same steps from Python. ``models`` creates it with the
tables (``create_all``: tests, benchmarks); migrations 0003_transfer_function
and 0004_transfer_lock_order create the same function, so a change here
needs a new migration too (tests/test_migrations.py compares the bodies).
"""

# The shape comes from one rule: a wallet row stays locked from its UPDATE
# until COMMIT, and other writers of a hot wallet queue for exactly that
# long, so do as little as possible while holding the hot row
# (bench/hot_wallet.py measures it against a bare conditional UPDATE):
#
# 1. The transfer row goes in first, before any wallet is locked. Its UNIQUE
#    checks (one debit and one reversal per payment, one transfer per
#    funding) run there, so a duplicate fails without touching a wallet.
#    Its two wallet foreign keys are DEFERRABLE INITIALLY DEFERRED: checked
#    at COMMIT, when this transaction holds both rows, because an immediate
#    check takes KEY SHARE on a wallet another transfer may hold, which
#    PostgreSQL records as a MultiXact on the hottest row there is.
# 2. Each wallet is locked by its own UPDATE, in DESCENDING id order. One
#    fixed order means crossing transfers cannot deadlock; descending means
#    the system wallets (funding, biller_clearing: made first, so the lowest
#    ids, and touched by every funding and payment) are locked last and held
#    for the shortest time. The debit is a conditional UPDATE (balance check
#    and change in one statement; the CHECK constraint backs it).
# 3. The two ledger entries, carrying the balances and versions the UPDATEs
#    returned: the only writes left under the last lock.
#
# A refusal (the debit wallet cannot cover the amount, or a wallet does not
# exist) leaves nothing behind: a wallet already credited or debited is put
# back (balance and version) and the transfer row deleted, so the caller may
# still commit its transaction. Then ``transfer_id`` is NULL and
# ``found_wallets`` says how many of the two wallets exist (2: insufficient
# funds). Earlier shapes were slower under contention: data-modifying CTEs
# in one statement (EvalPlanQual re-fetches every row after a lock wait),
# and PERFORM ... FOR NO KEY UPDATE of both wallets in ascending order
# before everything else (docs/benchmarks.md, "Hot-wallet benchmark", has the figures;
# bench/hot_wallet.py measures them).
TRANSFER_FUNCTION_SQL = """
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
DROP_TRANSFER_FUNCTION_SQL = "DROP FUNCTION IF EXISTS billvend_post_transfer"
