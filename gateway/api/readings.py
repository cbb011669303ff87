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
from decimal import Decimal
from typing import Any, Final, NamedTuple

import psycopg

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


# One stored row of a reading: the columns its FHIR Observation and the console show, in
# ROW_COLUMNS order. A plain tuple, as psycopg makes it, read by unpacking: a 30-day page has
# some 1,300 rows, and a dict per row (or even a named tuple, built and read by attribute)
# made the whole page build about a tenth slower.
ReadingRow = tuple[
    datetime,  # ts
    str,  # device_id
    str,  # code
    int | None,  # mdc
    Decimal | None,  # value
    str,  # unit
    datetime | None,  # measured_at
    str | None,  # absent_reason
    list[str],  # flags
    str | None,  # panel
    str | None,  # patient_key
    dict[str, Any] | None,  # value_code
    dict[str, Any] | None,  # sampled
]
ROW_COLUMNS = ("ts", "device_id", "code", "mdc", "value", "unit", "measured_at", "absent_reason",
               "flags", "panel", "patient_key", "value_code", "sampled")
_PATIENT_KEY: Final = 10  # ROW_COLUMNS.index("patient_key"), as a literal mypy can read


class Reading(NamedTuple):
    """The stored rows of one reading, in catalogue order for a panel."""

    # A named tuple, not a frozen dataclass: one is made per reading, and a frozen
    # dataclass's __init__ (object.__setattr__ per field) costs about twice as much.

    key: ReadingKey
    panel: str | None
    rows: list[ReadingRow]

    @property
    def patient_key(self) -> str | None:
        """The keyed hash of the patient the reading's device was assigned to, if any."""
        return self.rows[0][_PATIENT_KEY]


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
_COLUMNS = ", ".join(ROW_COLUMNS)


def _page_sql(query: ReadingQuery) -> tuple[str, dict[str, Any]]:
    """The SQL and parameters of one page's rows, by reading and in catalogue order within
    one, with the rows of one reading more than the page holds (to know a next page exists)."""
    # The principal is always filtered here, whatever row-level security adds behind it.
    clauses, params = scope_clauses(query)
    direction, compare = ("DESC", "<") if query.newest_first else ("ASC", ">")
    if query.after is not None:
        clauses.append(f"(ts, device_id, {_GROUP}) {compare} (%(a_ts)s, %(a_dev)s, %(a_grp)s)")
        params.update(a_ts=query.after[0], a_dev=query.after[1], a_grp=query.after[2])
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
    if not codes:
        # Every row in scope then belongs to a reading of the page, so one scan numbers the
        # rows by reading and keeps those of the first readings (PostgreSQL 15 stops the scan
        # there). Planned and run in about half the time of the join below, and it needs no
        # row estimate: for a device's 30 days the join's nested loop took 180 ms, this 4 ms.
        key = f"ts {direction}, device_id {direction}, {_GROUP} {direction}"
        return (
            f"SELECT {_COLUMNS} FROM (SELECT {_COLUMNS}, dense_rank() OVER (ORDER BY {key}) AS n"
            f" FROM observations WHERE {' AND '.join(clauses)}) o"
            f" WHERE n <= %(limit)s ORDER BY {key}, mdc NULLS LAST, code"
        ), params
    clauses.append("(" + " OR ".join(codes) + ")")
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
    return (
        f"WITH page AS (SELECT ts, device_id, {_GROUP} AS grp FROM observations"
        f" WHERE {' AND '.join(clauses)} GROUP BY 1, 2, 3 ORDER BY {order} LIMIT %(limit)s)"
        f" SELECT {', '.join(f'o.{name}' for name in ROW_COLUMNS)}"
        " FROM page p JOIN observations o ON o.ts = p.ts AND o.device_id = p.device_id"
        f" AND COALESCE(o.panel, o.code) = p.grp WHERE {' AND '.join(outer)}"
        f" ORDER BY p.{order.replace(', ', ', p.')}, o.mdc NULLS LAST, o.code"
    ), params


def fetch_readings(
    conn: psycopg.Connection[Any], query: ReadingQuery
) -> tuple[list[Reading], ReadingKey | None]:
    """One page of whole readings and the key to continue after (None on the last page)."""
    sql, params = _page_sql(query)
    # psycopg gives a timestamptz the session's zone, and any zone but 'UTC' (even 'Etc/UTC',
    # PostgreSQL's usual default) costs a zoneinfo conversion for every value loaded and again
    # for every FHIR instant and id written: a fifth of a 30-day page's time. So the rows are
    # read in UTC, and the session's zone is put back for the rest of the caller's
    # transaction (SET LOCAL: a failed query rolls it back with the transaction).
    zone = conn.info.parameter_status("TimeZone")
    switch = zone is not None and zone != "UTC"
    if switch:
        conn.execute("SELECT set_config('TimeZone', 'UTC', true)")
    with conn.cursor(binary=True) as cur:
        cur.execute(sql.encode(), params)
        rows: list[ReadingRow] = cur.fetchall()
    if switch:
        conn.execute("SELECT set_config('TimeZone', %s, true)", (zone,))
    readings: list[Reading] = []
    last: ReadingKey | None = None
    for row in rows:
        ts, device, code, _, _, _, _, _, _, panel, _, _, _ = row
        # The reading's group is COALESCE(panel, code), as in the query's ordering.
        key = (ts, device, code if panel is None else panel)
        if key == last:
            readings[-1].rows.append(row)
        else:
            readings.append(Reading(key, panel, [row]))
            last = key
    if len(readings) > query.limit:
        # The cursor's time is written in the session's zone, as it always was.
        at, device, group = readings[query.limit - 1].key
        return readings[: query.limit], (at.astimezone(conn.info.timezone), device, group)
    return readings, None
