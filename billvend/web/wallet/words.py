"""What a customer is told about a funding, in their words.

The gateway reports a status (Paystack's ``success``, ``failed``,
``abandoned``, ``reversed``, ``ongoing``...) and, for a card, the bank's
``gateway_response`` ("Declined", "Insufficient Funds", "Do Not Honor"...).
Those words are the bank's and are shown to no customer: each known one is
said in plain words, any other one as "the bank did not approve it".
"""

from __future__ import annotations

from typing import Optional

from billvend.funding.models import FUNDING_FAILED, FUNDING_SUCCEEDED, Funding

#: Fragments of Paystack's ``gateway_response`` (matched case-insensitively,
#: first match wins) and what they mean to a customer.
DECLINE_REASONS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("insufficient",), "there was not enough money in the account"),
    (("expired",), "the card has expired"),
    (("pin",), "the card PIN was not accepted"),
    (("otp", "token authentication", "authentication failed", "3ds", "3d secure"),
     "the one-time code (OTP) was not accepted"),
    (("limit", "exceeds"), "it is over the card's spending limit"),
    (("not permitted", "not allowed", "restricted", "blocked"),
     "the bank does not allow this card to pay online; ask your bank to enable it"),
    (("fraud", "suspect", "risk"), "the bank stopped it as a precaution; ask your bank"),
    (("inoperative", "unavailable", "timeout", "timed out", "unreachable", "no response"),
     "the bank could not be reached"),
    (("invalid card", "invalid account", "incorrect card", "card number"),
     "the card details were not accepted"),
)
GENERIC_DECLINE = "the bank did not approve it"


def decline_reason(gateway_response: Optional[str]) -> str:
    """The bank's ``gateway_response`` in a customer's words (never the
    bank's own text): ``"Insufficient Funds"`` -> ``"there was not enough
    money in the account"``; unknown or empty -> :data:`GENERIC_DECLINE`."""
    text = (gateway_response or "").casefold()
    for fragments, words in DECLINE_REASONS:
        if any(fragment in text for fragment in fragments):
            return words
    return GENERIC_DECLINE


def failure_message(funding: Funding) -> str:
    """One sentence for a funding that ended ``failed``, by what the gateway
    said: a checkout closed without paying (``abandoned``), a declined card
    (``failed``, with the reason), a reversal, or no final answer."""
    status = funding.gateway_status or ""
    if status == "abandoned":
        return "You closed the checkout without paying: nothing was taken."
    if status == "failed":
        return (f"Your bank declined this card payment ({decline_reason(funding.gateway_message)}): "
                "nothing was taken.")
    if status == "reversed":
        return "The bank reversed this payment: the money goes back to your card or account."
    return "The payment did not go through: nothing was taken."


def history_status(funding: Funding) -> str:
    """The funding history's short status for ``funding`` (no attention flag)."""
    if funding.status == FUNDING_SUCCEEDED:
        return "Added to your wallet"
    if funding.status == FUNDING_FAILED:
        return {"abandoned": "Not paid: nothing was taken",
                "failed": "Declined by your bank: nothing was taken",
                "reversed": "Reversed by the bank"}.get(funding.gateway_status or "",
                                                         "Did not go through: nothing was taken")
    if funding.method == "card" and not funding.authorization_url:
        return "Checkout did not open: nothing was taken"
    if funding.method == "card":
        # Open: the gateway has no final answer. The customer may still be on
        # the checkout, or may have closed it; nothing says it is processing.
        return "Waiting for your payment"
    return "Waiting for the bank"
