"""Python's cyclic garbage collector, tuned for long-running aidlink processes.

What a process has loaded once it has started (modules, the app, the registry cache: some
100,000 to 150,000 objects) lives as long as it does. By default every full collection walks
all of it again. The gateway set one off every second and a half at 5,000 readings/s: each
batch keeps a few thousand objects alive for a tenth of a second, long enough to be promoted
to the oldest generation, and a full collection runs once those outnumber a quarter of it.
Each took 55-125 ms with the interpreter lock held, pausing reception and both writers.
Nearly all of those objects are freed by reference counting; the collector finds no cycles
among them.
"""

from __future__ import annotations

import gc

# A young-generation collection once allocations exceed deallocations by this many (default
# 700), the middle generation every 20 of those (default 10).
YOUNG_THRESHOLD = 50_000
MIDDLE_THRESHOLD = 20


def settle() -> None:
    """Once startup is done: collect its garbage, then freeze what is left, so that no later
    collection walks it (``gc.freeze``; it is never freed, as it would not be anyway)."""
    gc.collect()
    gc.freeze()


def collect_less_often() -> None:
    """Collect every ``YOUNG_THRESHOLD`` net allocations rather than 700: a message's objects
    are then mostly freed before any collection sees them, instead of being walked, promoted
    and walked again. A collection of the young generation takes about 10 ms then, once in
    tens of seconds at full rate. The oldest generation keeps its default trigger."""
    _, _, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, oldest)
