"""The one helper that turns integer cents into a price for people (billing.money.format_price)."""

from __future__ import annotations

import pytest

from billing.money import format_price


@pytest.mark.parametrize(
    ("amount_cents", "currency", "shown"),
    [
        (1500, "usd", "$15"),
        (1550, "usd", "$15.50"),
        (1505, "usd", "$15.05"),
        (5, "usd", "$0.05"),
        (0, "usd", "$0"),
        (123_456_789, "usd", "$1,234,567.89"),
        (99_999_999, "USD", "$999,999.99"),
        (-1500, "usd", "-$15"),
        (1500, "eur", "€15"),
        (1999, "gbp", "£19.99"),
        (1234, "chf", "12.34 CHF"),
        (500, "jpy", "500 JPY"),  # zero-decimal: the amount is whole yen
        (10**20 + 1, "usd", "$1,000,000,000,000,000,000.01"),  # no float would get this right
    ],
)
def test_a_price_is_shown_from_integer_cents(amount_cents, currency, shown):
    assert format_price(amount_cents=amount_cents, currency=currency) == shown


@pytest.mark.parametrize("amount", [15.0, "1500", True, None])
def test_only_integers_are_prices(amount):
    with pytest.raises(TypeError):
        format_price(amount_cents=amount, currency="usd")
