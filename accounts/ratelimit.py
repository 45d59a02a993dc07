"""The rate limit's fixed windows and counter names, shared by authentication and throttling."""

from __future__ import annotations

import os
import threading

WINDOW_SECONDS = 60


def counter_key(kind: str, ident: str, window: int) -> str:
    return f"rl:{kind}:{ident}:{window}"


def current_window(now: float) -> int:
    return int(now // WINDOW_SECONDS)


# --- counting a busy key's calls in blocks --------------------------------------------------------
#
# A route that checks the service key in its own database statement (the balance read, the plain
# debit) need not ask Redis about the key on every call, only count the call. It counts in blocks: one round trip
# adds n calls to the window's counter, and the process hands out the n count numbers it got
# (counter - n + 1 .. counter) to its next n calls, each allowed as a call counted alone with
# that number would be (number <= limit). Numbers are never shared, so no more calls than the
# limit are allowed in a window; a number a process took and did not use before the window ended
# is a call refused early elsewhere, which the block size bounds: at most LEASE_MAX numbers per
# process, and at most a LEASE_SHARE-th of what the counter last showed was left, so near the
# limit every call is counted alone, as it is without blocks.
LEASE_MAX = 32
LEASE_SHARE = 64
# Blocks of more keys than this in one process: the oldest are forgotten (their numbers unused).
_LEASE_KEYS = 256


class _Lease:
    __slots__ = ("pid", "window", "next", "last")

    def __init__(self, pid: int, window: int, next_number: int, last: int) -> None:
        self.pid, self.window, self.next, self.last = pid, window, next_number, last


class CountLeases(threading.local):
    """This thread's blocks of count numbers, per rate-limit identity (a key's hash prefix).

    A block belongs to the process that took it: a child forked after it does not use it.
    """

    def __init__(self) -> None:
        self.blocks: dict[str, _Lease] = {}

    def _block(self, ident: str, window: int) -> _Lease | None:
        block = self.blocks.get(ident)
        if block is None or block.window != window or block.pid != os.getpid():
            return None
        return block

    def take(self, ident: str, window: int) -> int | None:
        """The next count number of this window's block for `ident`, if one is left."""
        block = self._block(ident, window)
        if block is None or block.next > block.last:
            return None
        number = block.next
        block.next += 1
        return number

    def size(self, ident: str, window: int, limit: int) -> int:
        """How many calls the next round trip for `ident` counts: one for the window's first
        (the counter is not known yet), else what the last round trip showed allows."""
        block = self._block(ident, window)
        if block is None:
            return 1
        if not limit:
            return LEASE_MAX
        return max(1, min(LEASE_MAX, (limit - block.last) // LEASE_SHARE))

    def keep(self, ident: str, window: int, counter: int, calls: int) -> None:
        """A round trip added `calls` to the counter, which it then showed as `counter`: the
        call that made it takes the first number, the next calls the others."""
        if ident not in self.blocks and len(self.blocks) >= _LEASE_KEYS:
            self.blocks.pop(next(iter(self.blocks)))
        self.blocks[ident] = _Lease(os.getpid(), window, counter - calls + 2, counter)


count_leases = CountLeases()
