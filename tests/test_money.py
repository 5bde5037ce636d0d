from decimal import Decimal

import pytest
from hypothesis import given, strategies as st

from billvend.platform.money import format_naira, kobo_to_naira_input, parse_naira


@pytest.mark.parametrize("text,kobo", [
    ("1500", 150000), ("1500.5", 150050), ("1500.50", 150050), ("1,500.50", 150050),
    ("₦2,000", 200000), ("NGN 300", 30000), (" 0.01 ", 1), ("0", 0), ("100000000", 10000000000),
])
def test_parse_naira_exact(text, kobo):
    assert parse_naira(text) == kobo


@pytest.mark.parametrize("text", ["", "-5", "abc", "1.234", "1e3", "1,50", "12,34,567", "NaN", "Infinity", "1.5.0", "٣", "15\n00"])
def test_parse_naira_rejects(text):
    with pytest.raises(ValueError):
        parse_naira(text)


@given(st.integers(min_value=0, max_value=10**14 - 1))
def test_round_trip(kobo):
    assert parse_naira(kobo_to_naira_input(kobo)) == kobo
    assert parse_naira(format_naira(kobo)) == kobo


def test_format_naira():
    assert format_naira(150050) == "₦1,500.50"
    assert format_naira(-150050) == "-₦1,500.50"
    assert format_naira(5, signed=True) == "+₦0.05"
    assert Decimal(kobo_to_naira_input(1)) == Decimal("0.01")
