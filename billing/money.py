"""Money and credit arithmetic: integers only, rounding in one place."""

from __future__ import annotations


def credits_to_claw_back(*, credits: int, amount_cents: int, reversed_cents: int) -> int:
    """How many of a purchase's `credits` go with `reversed_cents` of its `amount_cents`.

    `reversed_cents` is the running total that went back to the customer (refunds and lost
    disputes together), so calling this again after each partial refund gives the total to
    have taken back so far, never more than the purchase granted. Rounds down: any fraction of
    a credit stays with the customer. A full reversal takes back every credit.
    """
    for name, value in (("credits", credits), ("amount_cents", amount_cents), ("reversed_cents", reversed_cents)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an integer, got {value!r}")
    if credits < 0 or amount_cents <= 0:
        raise ValueError("credits must be >= 0 and amount_cents > 0")
    reversed_cents = max(0, min(reversed_cents, amount_cents))
    return credits * reversed_cents // amount_cents


# Stripe's zero-decimal currencies: their amounts are whole units, not hundredths.
ZERO_DECIMAL_CURRENCIES = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}
)
CURRENCY_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£"}


def format_price(*, amount_cents: int, currency: str) -> str:
    """A price for people to read, from integer minor units: 1500 usd -> "$15", 1550 usd -> "$15.50",
    1234567 usd -> "$12,345.67", 1500 chf -> "15 CHF", 500 jpy -> "500 JPY".

    Whole amounts drop the cents (as on the "Buy 115 credits for $15" button). Integer
    arithmetic only: no float ever sees the amount.
    """
    if isinstance(amount_cents, bool) or not isinstance(amount_cents, int):
        raise TypeError(f"amount_cents must be an integer, got {amount_cents!r}")
    code = currency.lower()
    sign = "-" if amount_cents < 0 else ""
    if code in ZERO_DECIMAL_CURRENCIES:
        units, cents = abs(amount_cents), 0
    else:
        units, cents = divmod(abs(amount_cents), 100)
    number = f"{units:,}" if cents == 0 else f"{units:,}.{cents:02d}"
    symbol = CURRENCY_SYMBOLS.get(code)
    return f"{sign}{symbol}{number}" if symbol else f"{sign}{number} {code.upper()}"
