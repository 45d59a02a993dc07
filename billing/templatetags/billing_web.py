"""Template filters of the billing pages."""

from __future__ import annotations

from django import template

from billing.money import format_price

register = template.Library()


@register.filter
def price(amount_cents: int, currency: str) -> str:
    """`{{ pack.price_cents|price:pack.currency }}` -> "$15"."""
    return format_price(amount_cents=amount_cents, currency=currency)


@register.filter
def signed(credits: int) -> str:
    """A credit change with its sign: +50, -1, 0."""
    return f"{credits:+d}" if credits else "0"
