"""The deterministic simulator of billvend's money system (issue 26, docs/simulation.md).

Test machinery, never shipped: it lives under ``tests/`` so it may import every
layer of ``billvend`` (tests/test_architecture.py checks only ``billvend/``) and
so nothing in production can import it. It runs the REAL services against a
seeded world (``world.py``: the clock, the VTpass-shaped provider, the
Paystack-shaped gateway, SMTP/SMS), a seeded queue and crashes (``engine.py``),
and checks the world's own books after every step (``oracle.py``).
``python -m tests.simulation --seed N --steps N`` (``make simulate``) runs it.
"""
