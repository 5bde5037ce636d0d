"""The bottom layer: config, extensions, units of work, clock, leases, queue, worker,
logs, metrics, heartbeats, money formatting. Imports no other billvend package."""
