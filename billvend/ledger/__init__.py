"""The double-entry ledger: wallets, transfers, entries, the PostgreSQL transfer
function, daily limits per transfer kind (``limits``), the invariant checker
domains register into. Imports no domain."""
