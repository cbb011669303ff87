"""FHIR-side reads: observations grouped into readings, paged by reading, never by row.

A reading is what one FHIR Observation shows: the rows of one blood-pressure measurement
(same device, same ``ts``, ``panel`` = 85354-9; adapters/ble_bpm.py writes them from one
0x2A35 value) form one panel, and every other row is a reading of its own. A page holds
whole readings, so a panel is never split across two pages, and ``_count`` counts the
Observations a client receives, as FHIR search paging does.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from gateway.api.queries import CursorError, scope_clauses

# A cursor is the key of the last reading on a page: (ts, device_id, group code).
ReadingKey = tuple[datetime, str, str]


@dataclass(frozen=True, slots=True)
class ReadingQuery:
    """A search over one principal's readings, keyset-paged in either time order.

    A reading matches when any of its rows matches the code filters (so a search for systolic
    pressure finds the whole panel) or when its panel code is one of ``panels``.
    """

    principal: str
    patient_key: str | None = None
    device_id: str | None = None
    loinc: tuple[str, ...] = ()
    mdc: tuple[int, ...] = ()
    panels: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    since_inclusive: bool = True
    until_inclusive: bool = False
    newest_first: bool = True
    limit: int = 50
    after: ReadingKey | None = None


@dataclass(frozen=True, slots=True)
class Reading:
    """The stored rows of one reading, in catalogue order for a panel."""

    key: ReadingKey
    panel: str | None
    rows: list[dict[str, Any]]


def encode_reading_cursor(key: ReadingKey, *, newest_first: bool) -> str:
    """An opaque cursor after a reading; it remembers the sort order it was issued for."""
    order = "-date" if newest_first else "date"
    raw = json.dumps(["r", order, key[0].isoformat(), key[1], key[2]])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_reading_cursor(text: str, *, newest_first: bool) -> ReadingKey:
    """Read a cursor back, or raise CursorError saying what is wrong with it."""
    try:
        padded = text + "=" * (-len(text) % 4)
        kind, order, ts, device, group = json.loads(base64.urlsafe_b64decode(padded))
        moment = datetime.fromisoformat(ts)
    except (ValueError, TypeError) as exc:
        raise CursorError("_cursor is not valid; follow the Bundle's next link as given") from exc
    if kind != "r" or moment.tzinfo is None:
        raise CursorError("_cursor is not valid; follow the Bundle's next link as given")
    wanted = "-date" if newest_first else "date"
    if order != wanted:
        raise CursorError(f"_cursor was issued for _sort={order}, not _sort={wanted}")
    return moment, str(device), str(group)


_GROUP = "COALESCE(panel, code)"


def fetch_readings(
    conn: psycopg.Connection[Any], query: ReadingQuery
) -> tuple[list[Reading], ReadingKey | None]:
    """One page of whole readings and the key to continue after (None on the last page)."""
    # The principal is always filtered here, whatever row-level security adds behind it.
    clauses, params = scope_clauses(query)
    codes = []
    if query.loinc:
        codes.append("code = ANY(%(loinc)s) OR panel = ANY(%(loinc)s)")
        params["loinc"] = list(query.loinc)
    if query.mdc:
        codes.append("mdc = ANY(%(mdc)s)")
        params["mdc"] = list(query.mdc)
    if query.panels:
        codes.append("panel = ANY(%(panels)s)")
        params["panels"] = list(query.panels)
    if codes:
        clauses.append("(" + " OR ".join(codes) + ")")
    direction, compare = ("DESC", "<") if query.newest_first else ("ASC", ">")
    if query.after is not None:
        clauses.append(f"(ts, device_id, {_GROUP}) {compare} (%(a_ts)s, %(a_dev)s, %(a_grp)s)")
        params.update(a_ts=query.after[0], a_dev=query.after[1], a_grp=query.after[2])
    order = f"ts {direction}, device_id {direction}, grp {direction}"
    # The rows of the page's readings: narrowed by the same patient or device and the page's
    # time span, so the planner uses the patient index and prunes partitions instead of
    # joining the page against every partition.
    outer = ["o.principal_code = %(principal)s",
             "o.ts BETWEEN (SELECT min(ts) FROM page) AND (SELECT max(ts) FROM page)"]
    if query.patient_key is not None:
        outer.append("o.patient_key = %(patient)s")
    if query.device_id is not None:
        outer.append("o.device_id = %(device)s")
    # First the page of reading keys (matched by any of their rows), then every row of those
    # readings, so a panel found by its systolic row comes back with all its components.
    sql = (
        f"WITH page AS (SELECT ts, device_id, {_GROUP} AS grp FROM observations"
        f" WHERE {' AND '.join(clauses)} GROUP BY 1, 2, 3 ORDER BY {order} LIMIT %(limit)s)"
        " SELECT o.ts, o.device_id, o.code, o.mdc, o.value, o.unit, o.measured_at,"
        " o.absent_reason, o.flags, o.panel, o.device_user, o.patient_key, o.received_at,"
        " o.sequence, o.value_code, o.sampled, p.grp"
        " FROM page p JOIN observations o ON o.ts = p.ts AND o.device_id = p.device_id"
        f" AND COALESCE(o.panel, o.code) = p.grp WHERE {' AND '.join(outer)}"
        f" ORDER BY p.{order.replace(', ', ', p.')}, o.mdc NULLS LAST, o.code"
    )
    with conn.cursor(row_factory=dict_row, binary=True) as cur:
        cur.execute(sql.encode(), params)
        rows = cur.fetchall()
    readings: list[Reading] = []
    for row in rows:
        key: ReadingKey = (row["ts"], row["device_id"], row["grp"])
        if not readings or readings[-1].key != key:
            readings.append(Reading(key=key, panel=row["panel"], rows=[]))
        readings[-1].rows.append(row)
    if len(readings) > query.limit:
        return readings[: query.limit], readings[query.limit - 1].key
    return readings, None
