"""The double-entry ledger: wallets, transfers, entries, the PostgreSQL transfer
function, the invariant checker domains register into. Imports no domain."""
