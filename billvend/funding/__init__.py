"""Money in: wallet funding, money arriving from outside through a payment gateway.

Two ways in (DESIGN.md, Money in; ``reference/paystack-api.md``):

- **card checkout**: ``checkout.begin_checkout`` commits an ``initiated``
  funding (its reference fixed), THEN asks the gateway to ``initialize`` a hosted
  checkout for that reference, THEN records the checkout URL; the customer
  pays there and comes back to the callback, which verifies it (``verification.verify_funding``);
- **bank transfer** to the customer's dedicated account
  (``accounts.ensure_dedicated_account``): the money arrives only as a
  ``charge.success`` webhook (or in the day's list), which
  ``events.process_event`` turns into a funding only after the gateway's
  ``verify``, for the customer verify names (never the webhook's; ``arrivals``).

One module per step, importing one way (lower first): ``models``, ``deadline``,
``gateways`` (the clients and ``gateway()``, the configured one); ``references``;
``checkout``; ``accounts``; ``arrivals`` (which funding a gateway transaction is,
whose money it is); ``verification`` (verify and credit, the sweep's due list);
``admin_credit`` (an admin credits a flagged arrival at the verified amount);
``events`` (webhooks); ``reconciliation``; ``invariants``; ``seed`` (tests and seed
data); ``tasks``; ``cli``.

The transaction rule (``billvend.platform.transactions``): every gateway call
happens outside any transaction, between two units of work; the credit is its
own unit, safe to repeat, and one credit per gateway reference is enforced by
the database (``verification``).
"""
