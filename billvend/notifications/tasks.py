"""Huey tasks of the outbox (filled in next: the send task and the sweep)."""
