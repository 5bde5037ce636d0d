"""Money in: checkout, verification, dedicated accounts, gateway events,
reconciliation (services.py), gateways, tasks, CLI."""
