"""Electricity vending: the payment lifecycle, its tasks and sweep, providers,
meter verification, status watching, the customer journey."""
