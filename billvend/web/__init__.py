"""The top layer: every blueprint, the web-only helpers (security, forms, statements)
and the flask commands (cli.py). May import every domain; nothing imports it."""
