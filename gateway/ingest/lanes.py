"""Writer lanes: a lane's queue, and how its writer takes a batch from it.

A batch closes at ``max_rows`` messages, ``max_delay`` seconds after its first, or right after
an alarm (a priority channel), which must not wait for more messages to come.
"""

from __future__ import annotations

import queue
import time

from gateway.ingest.replies import PRIORITY_CHANNELS
from gateway.ingest.store import BatchStore, Incoming

__all__ = ["Lane", "collect", "urgent"]


class Lane:
    """One writer: its queue, the batch it holds (taken, not yet acknowledged), its store."""

    def __init__(self, index: int, maxsize: int) -> None:
        self.index = index
        self.queue: queue.Queue[Incoming] = queue.Queue(maxsize=maxsize)
        self.in_hand: list[Incoming] = []
        self.store: BatchStore | None = None


def collect(source: queue.Queue[Incoming], max_rows: int, max_delay: float) -> list[Incoming]:
    """The next batch from ``source``; empty if nothing came within 0.2 s."""
    try:
        first = source.get(timeout=0.2)
    except queue.Empty:
        return []
    batch = [first]
    deadline = time.monotonic() + max_delay
    while len(batch) < max_rows and not urgent(batch[-1]):
        if _take_waiting(source, batch, max_rows):
            continue
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            batch.append(source.get(timeout=remaining))
        except queue.Empty:
            break
    return batch


def _take_waiting(source: queue.Queue[Incoming], batch: list[Incoming], limit: int) -> int:
    """Move the messages already queued into the batch under one lock, up to ``limit`` and
    through the first alarm; how many. Taking them one ``get`` at a time locked, checked and
    signalled for each: a few per cent of the gateway's time."""
    taken = 0
    with source.mutex:
        waiting = source.queue
        while waiting and len(batch) < limit:
            message = waiting.popleft()
            batch.append(message)
            taken += 1
            if urgent(message):
                break
        if taken:
            source.not_full.notify(taken)
    return taken


def urgent(message: Incoming) -> bool:
    """An alarm: flush the batch now rather than wait for more messages."""
    return message.topic.rsplit("/", 1)[-1] in PRIORITY_CHANNELS
