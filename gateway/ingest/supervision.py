"""Heartbeat and reporting supervision: a device silent beyond its profile's reporting
interval raises ``device.offline``; its next message raises ``device.online`` (in the store)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from gateway import profiles

# For a model without a profile: a day, as most home-care devices report at least daily.
DEFAULT_INTERVAL = timedelta(hours=24)


def interval_of(model: str) -> timedelta:
    """How long a device of this model may stay silent."""
    profile = profiles.by_model().get(model)
    return DEFAULT_INTERVAL if profile is None else profile.reporting_interval


def sweep(conn: psycopg.Connection[Any], now: datetime) -> list[str]:
    """Mark devices silent past their interval offline, with an event each; return their ids."""
    rows = conn.execute(
        "SELECT s.device_id, d.model, s.last_seen FROM device_state s"
        " JOIN devices d ON d.id = s.device_id WHERE s.online AND d.state <> 'retired'"
    ).fetchall()
    silent = [(device, last) for device, model, last in rows if now - last > interval_of(model)]
    gone = []
    with conn.transaction():
        for device_id, last_seen in silent:
            # Only if nothing arrived since we looked: the writer may have just heard from it.
            cur = conn.execute(
                "UPDATE device_state SET online = false"
                " WHERE device_id = %s AND online AND last_seen = %s",
                (device_id, last_seen),
            )
            if cur.rowcount != 1:
                continue
            conn.execute(
                "INSERT INTO events (occurred_at, device_id, principal_code, patient_key, type,"
                " data, channel, device_time, received_at)"
                " SELECT %(now)s, d.id, d.principal_code,"
                "  (SELECT a.patient_key FROM assignments a"
                "    WHERE a.device_id = d.id AND a.valid_to IS NULL),"
                "  'device.offline', %(data)s, 'supervision', false, %(now)s"
                " FROM devices d WHERE d.id = %(device)s ON CONFLICT DO NOTHING",
                {"now": now, "device": device_id, "data": Jsonb({
                    "last_seen": last_seen.isoformat(),
                    "silent_for_s": int((now - last_seen).total_seconds())})},
            )
            gone.append(device_id)
    return gone
