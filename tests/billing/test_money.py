"""The one rounding helper for clawbacks (billing.money.credits_to_claw_back)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.money import credits_to_claw_back


@pytest.mark.parametrize(
    "credits, amount, reversed_cents, expected",
    [
        (115, 1500, 0, 0),
        (115, 1500, 1500, 115),  # a full refund takes every credit
        (115, 1500, 750, 57),  # 57.5: the half credit stays with the customer
        (115, 1500, 1, 0),  # 0.077 of a credit: nothing
        (115, 1500, 14, 1),  # 1.07
        (115, 1500, 1499, 114),  # 114.92: still not the last credit
        (345, 4500, 1500, 115),  # one pack of three refunded
        (115, 1500, 9999, 115),  # more than was paid (refund plus lost dispute): capped
        (115, 1500, -5, 0),
        (0, 1500, 1500, 0),
    ],
)
def test_clawback_examples(credits, amount, reversed_cents, expected):
    assert credits_to_claw_back(credits=credits, amount_cents=amount, reversed_cents=reversed_cents) == expected


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"credits": 1.5, "amount_cents": 1500, "reversed_cents": 1}, TypeError),
        ({"credits": 115, "amount_cents": 1500.0, "reversed_cents": 1}, TypeError),
        ({"credits": 115, "amount_cents": 1500, "reversed_cents": True}, TypeError),
        ({"credits": 115, "amount_cents": 0, "reversed_cents": 0}, ValueError),
        ({"credits": -1, "amount_cents": 1500, "reversed_cents": 0}, ValueError),
    ],
)
def test_clawback_refuses_anything_but_sane_integers(kwargs, error):
    with pytest.raises(error):
        credits_to_claw_back(**kwargs)


amounts = st.integers(min_value=1, max_value=10**9)
credit_counts = st.integers(min_value=0, max_value=10**9)


@given(credits=credit_counts, amount=amounts, data=st.data())
def test_clawback_never_exceeds_the_exact_share_nor_falls_a_credit_short(credits, amount, data):
    reversed_cents = data.draw(st.integers(min_value=0, max_value=amount))
    taken = credits_to_claw_back(credits=credits, amount_cents=amount, reversed_cents=reversed_cents)
    # Exact rational comparison, no floats: taken <= credits * r / a < taken + 1.
    assert taken * amount <= credits * reversed_cents < (taken + 1) * amount
    assert 0 <= taken <= credits


@given(credits=credit_counts, amount=amounts, data=st.data())
def test_clawback_grows_with_the_money_returned_and_ends_at_every_credit(credits, amount, data):
    steps = sorted(data.draw(st.lists(st.integers(min_value=0, max_value=amount), max_size=8)))
    running = [credits_to_claw_back(credits=credits, amount_cents=amount, reversed_cents=r) for r in steps]
    assert running == sorted(running)  # partial refunds one after another only ever add
    assert credits_to_claw_back(credits=credits, amount_cents=amount, reversed_cents=amount) == credits


@given(credits=credit_counts, amount=amounts, data=st.data())
def test_split_refunds_never_take_more_than_one_refund_of_the_total(credits, amount, data):
    first = data.draw(st.integers(min_value=0, max_value=amount))
    second = data.draw(st.integers(min_value=0, max_value=amount - first))
    one_go = credits_to_claw_back(credits=credits, amount_cents=amount, reversed_cents=first + second)
    # Rounding each part on its own never takes more than rounding the running total, which
    # is what the purchase services do.
    separately = sum(
        credits_to_claw_back(credits=credits, amount_cents=amount, reversed_cents=r) for r in (first, second)
    )
    assert separately <= one_go
