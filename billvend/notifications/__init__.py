"""Messages to customers (issue 23): the outbox, its senders and their retries.

A layer below the domains and above the ledger: it knows nothing of payments or
fundings. A domain calls :func:`billvend.notifications.services.notify` with
plain data inside its own unit of work; the row is sent after that unit
commits, by a task or by the sweep (docs/architecture.md).
"""
