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
