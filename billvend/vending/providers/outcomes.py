"""The outcome table shared by the simulator and the VTpass sandbox server.

Deterministic test meters (DESIGN.md, Vending; reference/vtpass-api.md,
"Sandbox behaviour by meter number"), plus the realistic made-up details a
disco returns: customer names, addresses, tokens and kWh units. Everything is
derived from the meter number or ``request_id`` with a seeded RNG, so every
process computes the same answer for the same order.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Optional

# What the provider does with an order, by meter number.
PREPAID_SUCCESS_METER = "1111111111111"
POSTPAID_SUCCESS_METER = "1010101010101"
PENDING_METER = "201000000000"  # processing; delivered on requery
TIMEOUT_METER = "300000000000"  # read timeout, but the order was vended
NO_RESPONSE_METER = "400000000000"  # no answer, never processed
UNEXPECTED_METER = "500000000000"  # garbled answer; the order was vended
INVALID_METER = "0000000000000"  # no such meter
DRIP_METER = "600000000000"  # the pay answer drips in slowly, then delivers
LATE_RECORD_METER = "700000000000"  # no answer; requery says 015 for a while, then delivered
# Prepaid success that needs the two key-change tokens first and carries a
# debt deduction: shows everything a disco may return with a token.
KCT_METER = "1212121212121"


@dataclass(frozen=True)
class Behaviour:
    """How the provider treats one order.

    ``answer`` is what the ``pay`` call returns: ``delivered``, ``failed``,
    ``pending`` (processing), ``timeout`` (no answer in time),
    ``no_response`` (connection dropped) or ``unexpected`` (a reply that is
    not the API's shape). ``recorded`` is whether the provider keeps the
    order, and ``final`` what a requery eventually reports for it.
    """

    answer: str
    recorded: bool
    final: str  # "delivered" | "failed"
    code: Optional[str] = None


FIXED_BEHAVIOURS: dict[str, Behaviour] = {
    PREPAID_SUCCESS_METER: Behaviour("delivered", True, "delivered"),
    KCT_METER: Behaviour("delivered", True, "delivered"),
    POSTPAID_SUCCESS_METER: Behaviour("delivered", True, "delivered"),
    PENDING_METER: Behaviour("pending", True, "delivered", "PROCESSING"),
    TIMEOUT_METER: Behaviour("timeout", True, "delivered", "TIMEOUT"),
    NO_RESPONSE_METER: Behaviour("no_response", False, "failed", "NO_RESPONSE"),
    UNEXPECTED_METER: Behaviour("unexpected", True, "delivered", "UNEXPECTED_RESPONSE"),
    INVALID_METER: Behaviour("failed", True, "failed", "INVALID_ACCOUNT"),
    # VTpass sandbox: the answer takes longer than the lease, each piece
    # inside the read timeout; the order exists only once it is complete.
    DRIP_METER: Behaviour("drip", True, "delivered", "TIMEOUT"),
    # VTpass sandbox: the connection drops; the provider records the order
    # only SANDBOX_LATE_RECORD_SECONDS later (requery: 015 until then).
    LATE_RECORD_METER: Behaviour("late_record", True, "delivered", "NO_RESPONSE"),
}

METER_TYPES_OF_TEST_METERS = {
    PREPAID_SUCCESS_METER: "prepaid",
    KCT_METER: "prepaid",
    POSTPAID_SUCCESS_METER: "postpaid",
}

# The smallest purchase each disco accepts, in kobo (reference/vtpass-api.md,
# merchant-verify ``Min_Purchase_Amount``: "e.g. ₦1,000+ at some discos").
# Made-up but realistic: most discos take ₦500 on prepaid, some ₦1,000;
# postpaid bills start at ₦1,000.
DEFAULT_MIN_PURCHASE_KOBO = 500_00
_MIN_PURCHASE_KOBO = {
    "abuja-electric": 1_000_00,
    "kano-electric": 1_000_00,
    "jos-electric": 1_000_00,
    "yola-electric": 1_000_00,
}
POSTPAID_MIN_PURCHASE_KOBO = 1_000_00

# NERC tariff classes, as discos print them on receipts.
_TARIFF_CLASSES = ["R2 SINGLE PHASE RESIDENTIAL", "R2 THREE PHASE RESIDENTIAL",
                   "C1 SINGLE PHASE COMMERCIAL", "A1 BAND A RESIDENTIAL"]

# Tariff used to turn naira into kWh: NERC's Band A rate (₦/kWh, 2024 order).
TARIFF_NAIRA_PER_KWH = Decimal("206.80")
VAT_RATE = Decimal("0.075")

_FIRST_NAMES = ["Adaeze", "Babatunde", "Chinedu", "Funmilayo", "Ibrahim", "Ngozi",
                "Oluwaseun", "Aisha", "Emeka", "Yetunde", "Musa", "Ifeoma"]
_LAST_NAMES = ["Okafor", "Adeyemi", "Bello", "Eze", "Abubakar", "Ogunleye",
               "Nwosu", "Balogun", "Danjuma", "Okonkwo", "Lawal", "Olawale"]
_STREETS = ["Allen Avenue, Ikeja", "Adeola Odeku Street, Victoria Island",
            "Ahmadu Bello Way, Garki", "Zoo Road, Kano", "Aba Road, Port Harcourt",
            "Rayfield Road, Jos", "Ahmadu Bello Way, Kaduna", "Ogui Road, Enugu",
            "Ring Road, Ibadan", "Sapele Road, Benin City", "Faulks Road, Aba",
            "Atiku Abubakar Way, Yola"]


def _rng(*parts: str) -> random.Random:
    seed = hashlib.sha256("|".join(parts).encode()).digest()
    return random.Random(int.from_bytes(seed[:8], "big"))


def behaviour_for(meter_number: str, request_id: str, success_rate: float) -> Behaviour:
    """The provider's behaviour for an order on ``meter_number``.

    Test meters are fixed; any other meter succeeds with ``success_rate``
    (0..1), else fails with a realistic code, decided by ``request_id`` so a
    requery agrees with the original answer.
    """
    fixed = FIXED_BEHAVIOURS.get(meter_number)
    if fixed is not None:
        return fixed
    rng = _rng("outcome", request_id)
    if rng.random() < success_rate:
        return Behaviour("delivered", True, "delivered")
    code = rng.choice(["SERVICE_UNAVAILABLE", "INSUFFICIENT_CREDIT", "TIMEOUT"])
    if code == "TIMEOUT":
        # An ambiguous timeout: half the time the disco vended anyway.
        if rng.random() < 0.5:
            return Behaviour("timeout", True, "delivered", code)
        return Behaviour("timeout", False, "failed", code)
    return Behaviour("failed", True, "failed", code)


def is_known_meter(meter_number: str) -> bool:
    """False only for the meter the sandbox treats as nonexistent."""
    return meter_number != INVALID_METER


def customer_for(meter_number: str, service_id: str) -> tuple[str, str]:
    """A stable (customer name, address) for a meter."""
    rng = _rng("customer", meter_number)
    name = f"{rng.choice(_FIRST_NAMES)} {rng.choice(_LAST_NAMES)}".upper()
    address = f"{rng.randint(1, 120)} {rng.choice(_STREETS)}"
    return name, address


def token_for(request_id: str) -> str:
    """A stable 20-digit STS-style token for an order."""
    rng = _rng("token", request_id)
    return "".join(str(rng.randint(0, 9)) for _ in range(20))


def units_kwh_for(amount_kobo: int) -> str:
    """kWh bought with ``amount_kobo`` after VAT, in 0.1 kWh steps (decimal string)."""
    net_naira = Decimal(amount_kobo) / 100 / (1 + VAT_RATE)
    units = (net_naira / TARIFF_NAIRA_PER_KWH).quantize(Decimal("0.1"), rounding=ROUND_DOWN)
    return str(units)


def receipt_reference_for(request_id: str) -> str:
    """A stable provider-side reference (VTpass ``exchangeReference`` style)."""
    rng = _rng("receipt", request_id)
    return "EXR" + "".join(str(rng.randint(0, 9)) for _ in range(12))


def min_purchase_kobo(service_id: str, meter_type: str) -> int:
    """The smallest purchase (kobo) the disco accepts for this meter type."""
    if meter_type == "postpaid":
        return POSTPAID_MIN_PURCHASE_KOBO
    return _MIN_PURCHASE_KOBO.get(service_id, DEFAULT_MIN_PURCHASE_KOBO)


@dataclass(frozen=True)
class DeliveryDetails:
    """What a disco returns with a prepaid token besides the token itself."""

    units_kwh: str
    tariff: str
    debt_kobo: Optional[int]
    kct1: Optional[str]
    kct2: Optional[str]


def delivery_details_for(meter_number: str, request_id: str, amount_kobo: int) -> DeliveryDetails:
    """Tariff, debt deducted, key-change tokens and units for a prepaid order.

    Stable per meter (tariff, whether it owes, whether it needs a key change)
    and per order (the KCT digits). ``KCT_METER`` always needs a key change
    and owes ₦350; the other test meters never do; any other meter: one in
    ten owes, one in twenty needs KCTs.
    """
    rng = _rng("meter-details", meter_number)
    tariff = rng.choice(_TARIFF_CLASSES)
    owes = rng.random() < 0.1
    needs_kct = rng.random() < 0.05
    if meter_number in FIXED_BEHAVIOURS:
        # The documented test meters behave as documented: plain tokens,
        # except the one that exists to show a key change and a debt.
        owes = needs_kct = meter_number == KCT_METER
    debt_kobo = None
    if owes:
        debt_kobo = 350_00 if meter_number == KCT_METER else rng.choice([150_00, 420_50, 1_000_00])
        debt_kobo = min(debt_kobo, amount_kobo // 2)
    kct1 = kct2 = None
    if needs_kct:
        order_rng = _rng("kct", request_id)
        kct1 = "".join(str(order_rng.randint(0, 9)) for _ in range(20))
        kct2 = "".join(str(order_rng.randint(0, 9)) for _ in range(20))
    return DeliveryDetails(units_kwh_for(amount_kobo - (debt_kobo or 0)), tariff, debt_kobo, kct1, kct2)
