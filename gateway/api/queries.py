"""Reads of patient data, always scoped to the caller's principal and always logged."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from gateway.auth import Caller

MAX_PAGE = 1000
# The longest period one search may cover (a year, leap day included). A search names the
# readings it needs; a whole history is read period by period, each read logged on its own.
MAX_RANGE = timedelta(days=366)


class CursorError(ValueError):
    """A paging cursor is not one we issued."""


@dataclass(frozen=True, slots=True)
class ObservationQuery:
    """A search over one principal's observations; newest first, keyset-paged."""

    principal: str
    patient_key: str | None = None
    device_id: str | None = None
    loinc: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    since_inclusive: bool = True
    until_inclusive: bool = False
    limit: int = 100
    after: tuple[datetime, str, str] | None = None


def range_problem(since: datetime | None, until: datetime | None, now: datetime,
                  *, lower: str, upper: str) -> str | None:
    """What is wrong with a searched period, or None. The period runs from the lower bound to
    the upper bound, or to ``now`` when there is none; with no lower bound the search reads the
    newest readings first, page by page, and is not capped."""
    if since is None:
        return None
    end = until if until is not None else now
    if end - since <= MAX_RANGE:
        return None
    days = (end - since).total_seconds() / 86_400
    to = upper if until is not None else "now (no upper bound given)"
    return (f"{lower} to {to} spans {days:.1f} days; a search may cover at most "
            f"{MAX_RANGE.days} days, so search a longer period in parts")


def encode_cursor(row: dict[str, Any]) -> str:
    """An opaque cursor pointing after a row."""
    raw = json.dumps([row["ts"].isoformat(), row["device_id"], row["code"]])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[datetime, str, str]:
    """Read a cursor back, or raise CursorError."""
    try:
        padded = text + "=" * (-len(text) % 4)
        ts, device, code = json.loads(base64.urlsafe_b64decode(padded))
        moment = datetime.fromisoformat(ts)
    except (ValueError, TypeError) as exc:
        raise CursorError("cursor is not valid; use next_cursor as given") from exc
    if moment.tzinfo is None:
        raise CursorError("cursor is not valid; use next_cursor as given")
    return moment, str(device), str(code)


class SearchScope(Protocol):
    """What both observation searches (rows and whole readings) are narrowed by."""

    @property
    def principal(self) -> str: ...
    @property
    def patient_key(self) -> str | None: ...
    @property
    def device_id(self) -> str | None: ...
    @property
    def since(self) -> datetime | None: ...
    @property
    def until(self) -> datetime | None: ...
    @property
    def since_inclusive(self) -> bool: ...
    @property
    def until_inclusive(self) -> bool: ...
    @property
    def limit(self) -> int: ...


def scope_clauses(query: SearchScope) -> tuple[list[str], dict[str, Any]]:
    """The WHERE clauses (and their parameters) both observation searches share: the
    principal, the patient or device, and the time span with its inclusive ends."""
    clauses = ["principal_code = %(principal)s"]
    params: dict[str, Any] = {"principal": query.principal, "limit": query.limit + 1}
    if query.patient_key is not None:
        clauses.append("patient_key = %(patient)s")
        params["patient"] = query.patient_key
    if query.device_id is not None:
        clauses.append("device_id = %(device)s")
        params["device"] = query.device_id
    if query.since is not None:
        clauses.append("ts >= %(since)s" if query.since_inclusive else "ts > %(since)s")
        params["since"] = query.since
    if query.until is not None:
        clauses.append("ts <= %(until)s" if query.until_inclusive else "ts < %(until)s")
        params["until"] = query.until
    return clauses, params


def fetch_observations(
    conn: psycopg.Connection[Any], query: ObservationQuery
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of observations and the cursor of the next page (None at the end)."""
    clauses, params = scope_clauses(query)
    if query.loinc is not None:
        clauses.append("code = %(loinc)s")
        params["loinc"] = query.loinc
    if query.after is not None:
        clauses.append("(ts, device_id, code) < (%(a_ts)s, %(a_dev)s, %(a_code)s)")
        params.update(a_ts=query.after[0], a_dev=query.after[1], a_code=query.after[2])
    sql = (
        "SELECT ts, device_id, code, mdc, value, unit, measured_at, absent_reason, flags,"
        " panel, device_user, patient_key, received_at, sequence, clock_offset_s,"
        " value_code, sampled"
        " FROM observations WHERE "
        + " AND ".join(clauses)
        + " ORDER BY ts DESC, device_id DESC, code DESC LIMIT %(limit)s"
    )
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.encode(), params)
        rows = cur.fetchall()
    next_cursor = encode_cursor(rows[query.limit - 1]) if len(rows) > query.limit else None
    return rows[: query.limit], next_cursor


def log_access(
    conn: psycopg.Connection[Any],
    caller: Caller,
    *,
    patient_keys: set[str],
    action: str,
    purpose: str,
    end_user: str | None,
    detail: dict[str, Any],
) -> None:
    """Append one access-log entry per patient read, in the caller's transaction."""
    for key in sorted(patient_keys):
        conn.execute(
            "INSERT INTO access_log (principal_code, client, role, end_user, patient_key,"
            " action, purpose, detail) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (caller.principal, caller.subject, str(caller.role), end_user, key, action,
             purpose, Jsonb(detail)),
        )
