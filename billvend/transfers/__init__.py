"""Money between customers (issue 27): one customer sends money from their
wallet to another's, by email address or verified phone number.

``models`` (the ``p2p_transfers`` table), ``services`` (find a recipient, send:
one unit of work that locks both wallets, checks the daily limit and posts ONE
ledger transfer of kind ``p2p``; idempotent per (sender, key)), ``messages``
(the outbox rows both sides get), ``invariants`` (each ``p2p`` ledger transfer
has its own matching row). The page is ``billvend/web/wallet`` (``/wallet/transfer``).
"""
