"""The rate limit's fixed windows and counter names, shared by authentication and throttling."""

from __future__ import annotations

WINDOW_SECONDS = 60


def counter_key(kind: str, ident: str, window: int) -> str:
    return f"rl:{kind}:{ident}:{window}"


def current_window(now: float) -> int:
    return int(now // WINDOW_SECONDS)
