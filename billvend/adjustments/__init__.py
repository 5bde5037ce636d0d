"""Admin adjustments and bonuses with four-eyes approval (issue 27): ``models.py`` (the
``adjustments`` table), ``services.py`` (propose, approve, reject: the only way money
moves for them), ``messages.py`` (the customer's email), ``invariants.py`` (their
ledger rules)."""
