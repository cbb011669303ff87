"""Transport gap detection from the hubs' ``seq`` MQTT 5 user property.

A hub numbers its publishes 1, 2, 3, ... (one counter per MQTT client, kept across its
reconnects). QoS 1 and the gateway's ack-after-commit make loss impossible on the way from the
broker to the database, but a broker that crashes between its PUBACK to the hub and its next
persistence snapshot forgets messages the hub already considers delivered. Those numbers never
arrive, and this module makes that visible.

The rule, per client, in the batch's transaction:

- numbers above the highest stored one that skip some: the skipped range is recorded and an
  ``ingest.gap`` event names it (client, from, to, missing);
- a number at or below the highest is a redelivery or a late message; it raises nothing, and
  if it lies in a recorded range it is taken out of the range and reported once as
  ``ingest.gap_filled`` (so a message that merely overtook another is not left as a gap);
- within a batch a client's numbers are taken in ascending order, so reordering inside one
  batch never looks like a gap.

A client whose counter starts again at 1 (a hub that lost its state) is read as redelivering
until it passes its old highest number; what it loses meanwhile is not detected.
Rows lock per client (``FOR UPDATE``, in client order), so gateways sharing a subscription
serialise on the same client; there, messages of one client are split between gateways and a
gap may be raised and filled moments later.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from gateway.ingest.plan import Incoming
from gateway.ingest.topics import TopicError, parse_up

__all__ = ["GAP", "GAP_FILLED", "Arrival", "arrivals", "parse_seq", "seq_of", "track"]

GAP = "ingest.gap"
GAP_FILLED = "ingest.gap_filled"
CHANNEL = "mqtt"
# MQTT 5 user property values are strings; a counter beyond this is not one of ours.
_MAX_SEQ = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Arrival:
    """One numbered message of a batch."""

    client_id: str
    seq: int
    received_at: datetime


@dataclass(frozen=True, slots=True)
class _Client:
    device_id: str
    principal: str
    last: int | None


def parse_seq(value: str) -> int | None:
    """A ``seq`` property value as a positive number, or None when it is not one."""
    text = value.strip()
    if not text.isascii() or not text.isdigit():
        return None
    number = int(text)
    return number if 0 < number <= _MAX_SEQ else None


def arrivals(batch: Sequence[Incoming]) -> list[Arrival]:
    """The numbered messages of a batch on up topics (others carry no client counter)."""
    found = []
    for message in batch:
        # Outside 1..2^63-1 it is no counter of ours, and it would not fit the bigint column:
        # such a message is stored all the same, only not tracked.
        if message.seq is None or not 0 < message.seq <= _MAX_SEQ:
            continue
        try:
            topic = parse_up(message.topic)
        except TopicError:
            continue
        if topic is not None:
            found.append(Arrival(topic.client_id, message.seq, message.received_at))
    return found


def track(conn: psycopg.Connection[Any], batch: Iterable[Arrival]) -> list[tuple[Any, ...]]:
    """Advance the clients' counters; return the gap events to insert (events table columns:
    occurred_at, device_id, principal_code, patient_key, type, data, channel, device_time,
    received_at, ref). Clients not in the registry are skipped: their messages are dead
    letters and there is no device to hang an event on."""
    by_client: dict[str, dict[int, datetime]] = {}
    for arrival in batch:
        seen = by_client.setdefault(arrival.client_id, {})
        if arrival.seq not in seen or arrival.received_at < seen[arrival.seq]:
            seen[arrival.seq] = arrival.received_at
    if not by_client:
        return []
    clients = _lock(conn, sorted(by_client))
    events: list[tuple[Any, ...]] = []
    updates: list[tuple[str, int, datetime]] = []
    for client_id, seen in sorted(by_client.items()):
        client = clients.get(client_id)
        if client is None:
            continue
        last = client.last
        late = sorted(s for s in seen if last is not None and s <= last)
        if late:
            events += _fill(conn, client_id, client, late, seen)
        for seq in sorted(s for s in seen if last is None or s > last):
            if last is not None and seq > last + 1:
                events.append(_open(conn, client_id, client, last + 1, seq - 1, seen[seq]))
            last = seq
        if last is not None and last != client.last:
            updates.append((client_id, last, max(seen.values())))
    if updates:
        # One statement for the batch (hundreds of clients), rows in client order; arrays
        # in binary (%b), as in registry_cache.
        conn.execute(
            "INSERT INTO client_sequences (client_id, last_seq, updated_at)"
            " SELECT * FROM unnest(%b::text[], %b::bigint[], %b::timestamptz[])"
            " ON CONFLICT (client_id) DO UPDATE SET"
            " last_seq = GREATEST(client_sequences.last_seq, EXCLUDED.last_seq),"
            " updated_at = EXCLUDED.updated_at",
            ([u[0] for u in updates], [u[1] for u in updates], [u[2] for u in updates]),
        )
    return events


def _lock(conn: psycopg.Connection[Any], client_ids: list[str]) -> dict[str, _Client]:
    """The registered clients among ``client_ids`` with their counters, locked until commit.

    A client seen for the first time has no row to lock; two gateways taking its first
    messages at once both start it, and the upsert keeps the higher number."""
    # Joins on the unnested ids rather than "= ANY(%s)", which a generic plan of the prepared
    # statement evaluates against the whole array for every row (see registry_cache).
    counters = dict(conn.execute(
        "SELECT c.client_id, c.last_seq FROM client_sequences c"
        " JOIN unnest(%b::text[]) AS w(id) ON w.id = c.client_id"
        " ORDER BY c.client_id FOR UPDATE OF c",
        (client_ids,),
    ).fetchall())
    rows = conn.execute(
        "SELECT d.client_id, d.id, d.principal_code FROM devices d"
        " JOIN unnest(%b::text[]) AS w(id) ON w.id = d.client_id",
        (client_ids,),
    ).fetchall()
    return {r[0]: _Client(r[1], r[2], counters.get(r[0])) for r in rows}


def _open(conn: psycopg.Connection[Any], client_id: str, client: _Client, first: int,
          last: int, at: datetime) -> tuple[Any, ...]:
    conn.execute(
        "INSERT INTO client_sequence_gaps (client_id, seq_from, seq_to, opened_at)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (client_id, first, last, at),
    )
    data = {"client": client_id, "from": first, "to": last, "missing": last - first + 1}
    return _event(client, GAP, data, at, f"{first}-{last}")


def _fill(conn: psycopg.Connection[Any], client_id: str, client: _Client, late: list[int],
          seen: dict[int, datetime]) -> list[tuple[Any, ...]]:
    """Take late numbers out of the client's recorded ranges; one event per number filled."""
    ranges = conn.execute(
        "SELECT seq_from, seq_to, opened_at FROM client_sequence_gaps WHERE client_id = %s"
        " AND seq_from <= %s AND seq_to >= %s ORDER BY seq_from",
        (client_id, late[-1], late[0]),
    ).fetchall()
    events = []
    for first, last, opened in ranges:
        inside = [s for s in late if first <= s <= last]
        if not inside:
            continue
        conn.execute("DELETE FROM client_sequence_gaps WHERE client_id = %s AND seq_from = %s",
                     (client_id, first))
        start = first
        for seq in [*inside, last + 1]:
            if seq > start:
                conn.execute(
                    "INSERT INTO client_sequence_gaps (client_id, seq_from, seq_to, opened_at)"
                    " VALUES (%s, %s, %s, %s)",
                    (client_id, start, seq - 1, opened),
                )
            start = seq + 1
        for seq in inside:
            data = {"client": client_id, "seq": seq, "from": first, "to": last}
            events.append(_event(client, GAP_FILLED, data, seen[seq], str(seq)))
    return events


def _event(client: _Client, kind: str, data: dict[str, Any], at: datetime,
           ref: str) -> tuple[Any, ...]:
    return (at, client.device_id, client.principal, None, kind, Jsonb(data), CHANNEL, False,
            at, ref)


def seq_of(properties: object) -> int | None:
    """The ``seq`` user property of a received message's MQTT 5 properties, if valid."""
    pairs = getattr(properties, "UserProperty", None) or []
    for key, value in pairs:
        if key == "seq" and isinstance(value, str):
            return parse_seq(value)
    return None
