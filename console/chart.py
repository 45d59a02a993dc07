"""The overview's chart: an SVG drawn here (no chart library, nothing from a CDN)."""

from __future__ import annotations

from collections.abc import Sequence

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from .models import DailyRollup

WIDTH, HEIGHT = 960, 280
LEFT, RIGHT, BOTTOM, TOP = 56, 24, 36, 16
# The series drawn side by side for each day: (label, colour, the day's value).
SERIES = [
    ("granted", "#417690", lambda d: d.granted_free_credits + d.granted_paid_credits + d.granted_adjustment_credits),
    ("spent", "#79aec8", lambda d: d.spent_credits),
    ("expired", "#c4a000", lambda d: d.expired_credits),
    ("clawed back", "#ba2121", lambda d: d.clawed_back_credits + d.voided_credits),
]


def _bars(days: Sequence[DailyRollup], top: int) -> SafeString:
    slot = (WIDTH - LEFT - RIGHT) / max(len(days), 1)
    bar = slot * 0.8 / len(SERIES)
    plot = HEIGHT - BOTTOM - TOP
    rects = []
    for n, day in enumerate(days):
        for k, (label, colour, value) in enumerate(SERIES):
            amount = max(value(day), 0)
            height = plot * amount / top if top else 0
            x, y = LEFT + n * slot + slot * 0.1 + k * bar, HEIGHT - BOTTOM - height
            rects.append(
                (f"{x:.1f}", f"{y:.1f}", f"{bar:.1f}", f"{height:.1f}", colour, f"{day.day} {label}: {amount}")
            )
    return format_html_join(
        "",
        '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}</title></rect>',
        rects,
    )


def _axes(days: Sequence[DailyRollup], top: int) -> SafeString:
    slot = (WIDTH - LEFT - RIGHT) / max(len(days), 1)
    labels = [
        (f"{LEFT + n * slot + slot / 2:.1f}", HEIGHT - BOTTOM + 14, day.day.strftime("%d %b"))
        for n, day in enumerate(days)
        if n % 5 == 0 or n == len(days) - 1
    ]
    ticks = [
        (LEFT - 6, f"{HEIGHT - BOTTOM - (HEIGHT - BOTTOM - TOP) * q / 4 + 4:.1f}", round(top * q / 4)) for q in range(5)
    ]
    legend = [(LEFT + 120 * k, colour, LEFT + 120 * k + 14, label) for k, (label, colour, _) in enumerate(SERIES)]
    return (
        format_html(
            '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#999"/>', LEFT, HEIGHT - BOTTOM, WIDTH, HEIGHT - BOTTOM
        )
        + format_html_join("", '<text x="{}" y="{}" text-anchor="middle" font-size="11">{}</text>', labels)
        + format_html_join("", '<text x="{}" y="{}" text-anchor="end" font-size="11">{}</text>', ticks)
        + format_html_join(
            "",
            '<rect x="{}" y="2" width="10" height="10" fill="{}"/><text x="{}" y="11" font-size="11">{}</text>',
            legend,
        )
    )


def day_chart(days: Sequence[DailyRollup]) -> SafeString:
    """Credits granted, spent, expired and clawed back (voids included) per day, as bars."""
    top = max([max(value(day), 0) for day in days for _, _, value in SERIES] + [1])
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {} {}" width="100%" role="img" '
        'aria-label="Credits per day: granted, spent, expired, clawed back" data-testid="overview-chart">'
        "{}{}</svg>",
        WIDTH,
        HEIGHT,
        _axes(days, top),
        _bars(days, top),
    )
