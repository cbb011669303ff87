"""SQL over the ``events`` table for the events API: keyset pages and the stream's polls.

Every query names the caller's principal explicitly; row-level security is a second wall,
not the only one.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

MAX_PAGE = 500
MAX_EVENT_ID = 2**63 - 1

# A dotted type ("alarm.fall") or a prefix of one ending in ".*" ("alarm.*", "device.*").
_TYPE_FILTER = re.compile(r"^[a-z0-9_]+(\.[a-z0-9_]+)*(\.\*)?$")

_COLUMNS = ("id, occurred_at, device_id, patient_key, type, data, channel, received_at")


class EventQueryError(ValueError):
    """A filter, cursor or event id the caller gave is not usable; the message says why."""


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which of one principal's events a page or a stream carries."""

    principal: str
    patient_key: str | None = None
    device_id: str | None = None
    type_exact: str | None = None
    type_prefix: str | None = None


@dataclass(frozen=True, slots=True)
class EventPage:
    """One page of a newest-first listing."""

    since: datetime | None = None
    until: datetime | None = None
    after_id: int | None = None
    limit: int = 100
    before: tuple[datetime, int] | None = None


def parse_type(text: str) -> tuple[str | None, str | None]:
    """``(exact, prefix)`` from a type filter: ``alarm.fall`` or ``alarm.*``."""
    if len(text) > 64 or not _TYPE_FILTER.match(text):
        raise EventQueryError(
            f"type {text!r} is not an event type (e.g. alarm.fall) or a prefix ending"
            " in .* (e.g. alarm.*)"
        )
    if text.endswith(".*"):
        return None, text[:-1]
    return text, None


def parse_event_id(name: str, text: str) -> int:
    """An event id given by the caller (query ``after_id`` or header ``Last-Event-ID``)."""
    stripped = text.strip()
    if not stripped.isdigit() or not stripped.isascii() or int(stripped) > MAX_EVENT_ID:
        raise EventQueryError(f"{name} must be an event id (a non-negative integer), got {text!r}")
    return int(stripped)


def encode_cursor(row: dict[str, Any]) -> str:
    """An opaque cursor pointing after a row: base64url of ``["e", occurred_at, id]``."""
    raw = json.dumps(["e", row["occurred_at"].isoformat(), row["id"]])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[datetime, int]:
    """Read an events cursor back, or raise EventQueryError."""
    problem = "cursor is not an events cursor; pass next_cursor exactly as given"
    try:
        padded = text + "=" * (-len(text) % 4)
        tag, moment_text, event_id = json.loads(base64.urlsafe_b64decode(padded))
        moment = datetime.fromisoformat(moment_text)
    except (ValueError, TypeError) as exc:
        raise EventQueryError(problem) from exc
    if tag != "e" or moment.tzinfo is None or not isinstance(event_id, int):
        raise EventQueryError(problem)
    return moment, event_id


def _where(selection: EventFilter, params: dict[str, Any]) -> list[str]:
    clauses = ["principal_code = %(principal)s"]
    params["principal"] = selection.principal
    if selection.patient_key is not None:
        clauses.append("patient_key = %(patient)s")
        params["patient"] = selection.patient_key
    if selection.device_id is not None:
        clauses.append("device_id = %(device)s")
        params["device"] = selection.device_id
    if selection.type_exact is not None:
        clauses.append("type = %(type)s")
        params["type"] = selection.type_exact
    if selection.type_prefix is not None:
        # starts_with, not LIKE: "_" in a type would be a LIKE wildcard.
        clauses.append("starts_with(type, %(type_prefix)s)")
        params["type_prefix"] = selection.type_prefix
    return clauses


def device_known(conn: psycopg.Connection[Any], principal: str, device_id: str) -> bool:
    """Whether the device is the principal's now, or has events stored for the principal
    (a device transferred away keeps its history with the principal that had it)."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM devices WHERE id = %s AND principal_code = %s)"
        " OR EXISTS (SELECT 1 FROM events WHERE device_id = %s AND principal_code = %s)",
        (device_id, principal, device_id, principal),
    ).fetchone()
    return bool(row and row[0])


def fetch_page(
    conn: psycopg.Connection[Any], selection: EventFilter, page: EventPage
) -> tuple[list[dict[str, Any]], str | None]:
    """One page, newest first by (occurred_at, id), and the next page's cursor (or None)."""
    params: dict[str, Any] = {"limit": page.limit + 1}
    clauses = _where(selection, params)
    if page.since is not None:
        clauses.append("occurred_at >= %(since)s")
        params["since"] = page.since
    if page.until is not None:
        clauses.append("occurred_at < %(until)s")
        params["until"] = page.until
    if page.after_id is not None:
        clauses.append("id > %(after_id)s")
        params["after_id"] = page.after_id
    if page.before is not None:
        clauses.append("(occurred_at, id) < (%(b_at)s, %(b_id)s)")
        params.update(b_at=page.before[0], b_id=page.before[1])
    sql = (f"SELECT {_COLUMNS} FROM events WHERE " + " AND ".join(clauses)
           + " ORDER BY occurred_at DESC, id DESC LIMIT %(limit)s")
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.encode(), params)
        rows = cur.fetchall()
    next_cursor = encode_cursor(rows[page.limit - 1]) if len(rows) > page.limit else None
    return rows[: page.limit], next_cursor


def fetch_after(
    conn: psycopg.Connection[Any], selection: EventFilter, after_id: int, limit: int
) -> list[dict[str, Any]]:
    """Up to ``limit`` events with an id above ``after_id``, in id order."""
    params: dict[str, Any] = {"after": after_id, "limit": limit}
    clauses = [*_where(selection, params), "id > %(after)s"]
    sql = (f"SELECT {_COLUMNS} FROM events WHERE " + " AND ".join(clauses)
           + " ORDER BY id LIMIT %(limit)s")
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.encode(), params)
        return cur.fetchall()


def recent_ids(
    conn: psycopg.Connection[Any], selection: EventFilter, window: int
) -> tuple[int, list[int]]:
    """The highest visible event id of the selection (0 when none) and the visible ids of
    the selection within ``window`` ids below it."""
    params: dict[str, Any] = {}
    where = " AND ".join(_where(selection, params))
    row = conn.execute(f"SELECT coalesce(max(id), 0) FROM events WHERE {where}".encode(),
                       params).fetchone()
    highest = int(row[0]) if row else 0
    params.update(low=highest - window, high=highest)
    ids = conn.execute(
        f"SELECT id FROM events WHERE {where} AND id > %(low)s AND id <= %(high)s".encode(),
        params,
    ).fetchall()
    return highest, [int(r[0]) for r in ids]


def snapshot_bounds(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    """``(xmin, xmax)`` of a fresh snapshot as 64-bit transaction ids: every transaction
    below xmin has ended; none at or above xmax had started."""
    row = conn.execute(
        "SELECT pg_snapshot_xmin(s)::text, pg_snapshot_xmax(s)::text"
        " FROM pg_current_snapshot() AS s"
    ).fetchone()
    if row is None:
        raise RuntimeError("pg_current_snapshot() returned no row")
    return int(row[0]), int(row[1])
