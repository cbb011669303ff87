"""Heartbeat and reporting supervision: a device silent beyond its profile's reporting
interval raises ``device.offline``; its next message raises ``device.online`` (in the store)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from gateway import profiles

log = logging.getLogger(__name__)

# For a model without a profile: a day, as most home-care devices report at least daily.
DEFAULT_INTERVAL = timedelta(hours=24)
# What "online" means everywhere (this sweep, the fleet metrics): the store sets the flag on
# every message and this sweep clears it, but never for a retired device, whose flag would
# otherwise stay set for good. Over device_state ``s`` joined to devices ``d``.
ONLINE = "s.online AND d.state <> 'retired'"


def interval_of(model: str) -> timedelta:
    """How long a device of this model may stay silent."""
    profile = profiles.by_model().get(model)
    return DEFAULT_INTERVAL if profile is None else profile.reporting_interval


def sweep(conn: psycopg.Connection[Any], now: datetime) -> list[str]:
    """Mark devices silent past their interval offline, with an event each; return their ids."""
    rows = conn.execute(
        "SELECT s.device_id, d.model, s.last_seen, d.principal_code FROM device_state s"
        f" JOIN devices d ON d.id = s.device_id WHERE {ONLINE}"
    ).fetchall()
    silent = [(device, last, principal) for device, model, last, principal in rows
              if now - last > interval_of(model)]
    gone = []
    with conn.transaction():
        for device_id, last_seen, _ in silent:
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
    for device_id, last_seen, principal in silent:
        if device_id in gone:
            log.info("device %s went offline: silent since %s", device_id,
                     last_seen.isoformat(), extra={"device": device_id, "principal": principal})
    return gone
