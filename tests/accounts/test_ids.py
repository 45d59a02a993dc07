from __future__ import annotations

import re
from collections import Counter

from accounts.ids import _ALPHABET, random_id


def test_ids_have_the_prefix_and_twenty_alphanumerics():
    for _ in range(200):
        value = random_id("deb_")
        assert re.fullmatch(r"deb_[A-Za-z0-9]{20}", value)


def test_id_characters_are_drawn_evenly():
    counts = Counter("".join(random_id("", 50) for _ in range(2000)))
    assert set(counts) == set(_ALPHABET)
    expected = 2000 * 50 / len(_ALPHABET)  # about 1613 each
    # A modulo bias (bytes 248-255 kept) would give the first 8 characters 5/256 instead of
    # 4/256, about 400 more each; a 5-sigma band around the expectation is about +-200.
    assert all(abs(count - expected) < 5 * expected**0.5 for count in counts.values()), counts


def test_ids_do_not_repeat():
    assert len({random_id("x_") for _ in range(20000)}) == 20000
