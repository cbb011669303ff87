"""Server-sent events (WHATWG HTML, "Server-sent events"): the wire format, the stream's
settings and slots, and the delivery watermark that keeps a polled stream from skipping
events committed out of id order.

Wire format, one block per event, blocks separated by an empty line::

    retry: 3000              (once, first: the reconnect delay the client should use, ms)
    id: 4711                 (the event id; EventSource sends it back as Last-Event-ID)
    event: alarm.fall        (the event type)
    data: {"kind":"event",…} (the item as one line of JSON)

    : keepalive              (a comment line, sent when nothing else was sent for a while)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from itertools import count
from typing import Any

from fastapi import FastAPI

from adapters.model import dumps

_STATE_ATTRIBUTE = "aidlink_event_streams"


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """How event streams behave; ``configure_streams`` changes them per application."""

    poll_interval: float = 1.0
    heartbeat: float = 15.0
    max_per_client: int = 4
    retry_ms: int = 3000
    batch: int = 500
    # How long a delivered id stays in the re-scanned window even when PostgreSQL cannot
    # yet say that every older writer has ended (a long transaction elsewhere in the server).
    settle_after: float = 60.0


class StreamSlots:
    """Open streams per client. A slot counts while its stream touches it; one whose stream
    vanished without releasing it (a generator that never ran) lapses after ``stale``
    seconds, so it cannot lock a client out for good."""

    def __init__(self) -> None:
        self._open: dict[int, tuple[str, float]] = {}
        self._ids = count(1)

    def acquire(self, client: str, limit: int, stale: float) -> int | None:
        """A slot for ``client``, or None when it already has ``limit`` live streams."""
        now = time.monotonic()
        self._open = {k: v for k, v in self._open.items() if now - v[1] < stale}
        if sum(1 for owner, _ in self._open.values() if owner == client) >= limit:
            return None
        slot = next(self._ids)
        self._open[slot] = (client, now)
        return slot

    def touch(self, slot: int) -> None:
        """The stream behind ``slot`` is still alive."""
        if slot in self._open:
            self._open[slot] = (self._open[slot][0], time.monotonic())

    def release(self, slot: int) -> None:
        """The stream behind ``slot`` has ended."""
        self._open.pop(slot, None)

    def active(self) -> int:
        """How many slots are held."""
        return len(self._open)


@dataclass(slots=True)
class _Streams:
    settings: StreamSettings = field(default_factory=StreamSettings)
    slots: StreamSlots = field(default_factory=StreamSlots)


def _streams(app: FastAPI) -> _Streams:
    streams: _Streams | None = getattr(app.state, _STATE_ATTRIBUTE, None)
    if streams is None:
        streams = _Streams()
        setattr(app.state, _STATE_ATTRIBUTE, streams)
    return streams


def configure_streams(app: FastAPI, **changes: Any) -> StreamSettings:
    """Change an application's stream settings (fields of ``StreamSettings``), e.g. a short
    heartbeat in tests; returns the settings now in force."""
    streams = _streams(app)
    streams.settings = replace(streams.settings, **changes)
    return streams.settings


def stream_settings(app: FastAPI) -> StreamSettings:
    """The application's stream settings."""
    return _streams(app).settings


def stream_slots(app: FastAPI) -> StreamSlots:
    """The application's open-stream slots (``active()`` is 0 once every stream ended)."""
    return _streams(app).slots


def retry_block(milliseconds: int) -> str:
    """The reconnect delay the client should use."""
    return f"retry: {milliseconds}\n\n"


def event_block(event_id: int, event_type: str, item: dict[str, Any]) -> str:
    """One event. ``dumps`` writes compact JSON, so the data is one line (a newline inside a
    string is escaped as \\n)."""
    return f"id: {event_id}\nevent: {event_type}\ndata: {dumps(item)}\n\n"


KEEPALIVE = ": keepalive\n\n"


@dataclass(slots=True)
class Watermark:
    """What a stream has delivered, robust to events committed out of id order.

    Event ids come from a sequence, taken when a row is inserted, while rows become visible
    when their transaction commits. Transaction A can take id 7, transaction B id 8, and B
    commit first: a poll for "id > last delivered" would then deliver 8 and skip 7 forever.

    So each poll reads every id above ``floor`` and delivers those not yet in ``delivered``.
    ``floor`` only rises once no transaction that could still hold a lower id is running:
    after poll P, every id at or below P's highest that is not yet visible belongs to a
    transaction that had started before the end of P (its xid is below P's snapshot xmax).
    When a later poll's snapshot xmin (the oldest transaction still running) is at or above
    P's xmax, all of those transactions have ended, the poll saw everything they committed,
    and the floor may move up to P's highest id. Rolled-back inserts and upserts that lost
    to the natural key leave gaps in the ids; they are never waited for.

    One residue: a transaction takes its id from the sequence just before it gets its xid
    (both inside one INSERT). ``settle_after`` also bounds the window when a long transaction
    elsewhere holds xmin back; an id whose transaction runs longer than that may be missed.
    """

    floor: int
    delivered: set[int] = field(default_factory=set)
    # (xmax of a poll's closing snapshot, highest id seen by then, monotonic time of the poll)
    pending: list[tuple[int, int, float]] = field(default_factory=list)

    def fresh(self, ids: list[int]) -> list[int]:
        """The ids of a poll that have not been delivered yet, in the order given."""
        return [i for i in ids if i > self.floor and i not in self.delivered]

    def advance(self, *, xmin_before: int, xmax_after: int, ids: list[int], truncated: bool,
                now: float, settle_after: float) -> None:
        """Record a committed poll: ``ids`` it read (ascending, all delivered now), the xmin
        taken before its read and the xmax taken after it; ``truncated`` when it hit its
        row limit, so ids above its last one may be unread."""
        self.delivered.update(ids)
        ceiling = ids[-1] if truncated and ids else None
        settled = [p for p in self.pending if p[0] <= xmin_before or now - p[2] >= settle_after]
        self.pending = [p for p in self.pending if p not in settled]
        if settled:
            target = max(p[1] for p in settled)
            if ceiling is not None:
                target = min(target, ceiling)
            self.floor = max(self.floor, target)
        highest = max([self.floor, *self.delivered])
        self.pending.append((xmax_after, highest, now))
        self.delivered = {i for i in self.delivered if i > self.floor}
