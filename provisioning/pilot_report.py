"""The pilot report of a device model: the evidence for promoting it to general use.

Per device of the model, over the period (by default from the start of its pilot until now):
readings stored and readings per day in service, payloads the adapters rejected (dead letters
with reason ``decode_error``), hours offline (``device.offline`` until the next
``device.online``), low-battery events and returns from patients. A last row with
``device_id`` empty sums the model's devices up.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from gateway import profiles
from provisioning import pilots

Conn = psycopg.Connection[Any]
COLUMNS = ("model", "stage", "device_id", "principal", "state", "onboarded_at", "days",
           "readings", "readings_per_day", "decode_rejects", "offline_hours",
           "low_battery_events", "returns")
# Events that say the battery is low outright (SCAIP and SIA DC-09 alarm units); a plain
# ``device.battery`` level counts when at or below the model profile's threshold.
LOW_BATTERY_TYPES = ("device.battery_low",)
_DAY = timedelta(days=1)


def _period_start(conn: Conn, model: str) -> datetime | None:
    row = conn.execute("SELECT min(at) FROM model_stage_history WHERE model = %s"
                       " AND stage = 'pilot'", (model,)).fetchone()
    return None if row is None else row[0]


def _counts(conn: Conn, sql: str, ids: list[str], since: datetime,
            until: datetime) -> dict[str, int]:
    return {str(r[0]): int(r[1]) for r in conn.execute(sql, (ids, since, until))}


def _offline_seconds(conn: Conn, ids: list[str], since: datetime,
                     until: datetime) -> dict[str, float]:
    """Seconds each device spent offline within the period, from its online/offline events;
    an event before the period tells whether the device was offline when it began."""
    totals: dict[str, float] = defaultdict(float)
    down: dict[str, datetime] = {}
    for device_id, kind, at in conn.execute(
            "SELECT device_id, type, occurred_at FROM events WHERE device_id = ANY(%s)"
            " AND type IN ('device.offline', 'device.online') AND occurred_at < %s"
            " ORDER BY device_id, occurred_at, id", (ids, until)):
        if kind == "device.offline":
            down.setdefault(device_id, at)
        elif device_id in down:
            start = max(down.pop(device_id), since)
            totals[device_id] += max((at - start).total_seconds(), 0.0)
    for device_id, at in down.items():
        totals[device_id] += max((until - max(at, since)).total_seconds(), 0.0)
    return totals


def _low_battery(conn: Conn, model: str, ids: list[str], since: datetime,
                 until: datetime) -> dict[str, int]:
    profile = profiles.by_model().get(model)
    # Without a profile there is no threshold: only outright low-battery events count.
    threshold = -1 if profile is None else profile.battery_low_percent
    return {str(r[0]): int(r[1]) for r in conn.execute(
        "SELECT device_id, count(*) FROM events WHERE device_id = ANY(%s)"
        " AND occurred_at >= %s AND occurred_at < %s AND (type = ANY(%s)"
        "   OR (type = 'device.battery' AND (data->>'level')::numeric <= %s))"
        " GROUP BY device_id", (ids, since, until, list(LOW_BATTERY_TYPES), threshold))}


def pilot_report(conn: Conn, model: str, *, principal: str | None = None,
                 since: datetime | None = None, until: datetime | None = None
                 ) -> list[dict[str, Any]]:
    """The model's devices (one principal's, if given) and their pilot figures, then a total."""
    stage = pilots.describe(conn, model)["stage"]
    end = until or datetime.now(UTC)
    start = since or _period_start(conn, model) or end - timedelta(days=30)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT id, principal_code, state, created_at FROM devices"
                    " WHERE model = %s AND (%s::text IS NULL OR principal_code = %s)"
                    " ORDER BY principal_code, id", (model, principal, principal))
        devices = cur.fetchall()
    ids = [d["id"] for d in devices]
    readings = _counts(conn, "SELECT device_id, count(*) FROM observations"
                             " WHERE device_id = ANY(%s) AND ts >= %s AND ts < %s"
                             " GROUP BY device_id", ids, start, end)
    rejects = _counts(conn, "SELECT device_id, sum(times) FROM dead_letters"
                            " WHERE device_id = ANY(%s) AND reason = 'decode_error'"
                            " AND last_seen >= %s AND first_seen < %s GROUP BY device_id",
                      ids, start, end)
    returns = _counts(conn, "SELECT device_id, count(*) FROM device_history"
                            " WHERE device_id = ANY(%s) AND action = 'returned'"
                            " AND at >= %s AND at < %s GROUP BY device_id", ids, start, end)
    battery = _low_battery(conn, model, ids, start, end)
    offline = _offline_seconds(conn, ids, start, end)
    rows: list[dict[str, Any]] = []
    for device in devices:
        # Days in service within the period; at least one, so a new device's rate is sane.
        days = max((end - max(start, device["created_at"])) / _DAY, 1.0)
        count = readings.get(device["id"], 0)
        rows.append({
            "model": model, "stage": stage, "device_id": device["id"],
            "principal": device["principal_code"], "state": device["state"],
            "onboarded_at": device["created_at"].astimezone(UTC).isoformat(),
            "days": round(days, 2), "readings": count,
            "readings_per_day": round(count / days, 2),
            "decode_rejects": rejects.get(device["id"], 0),
            "offline_hours": round(offline.get(device["id"], 0.0) / 3600, 2),
            "low_battery_events": battery.get(device["id"], 0),
            "returns": returns.get(device["id"], 0),
        })
    device_days = sum(float(r["days"]) for r in rows)
    total_readings = sum(int(r["readings"]) for r in rows)
    rows.append({
        "model": model, "stage": stage, "device_id": None, "principal": principal,
        "state": None, "onboarded_at": None, "days": round(device_days, 2),
        "readings": total_readings,
        "readings_per_day": round(total_readings / device_days, 2) if device_days else 0.0,
        "decode_rejects": sum(int(r["decode_rejects"]) for r in rows),
        "offline_hours": round(sum(float(r["offline_hours"]) for r in rows), 2),
        "low_battery_events": sum(int(r["low_battery_events"]) for r in rows),
        "returns": sum(int(r["returns"]) for r in rows),
    })
    return rows
